"""The class-conditional diffusion generator: model, training, checkpoints, guided sampling, synthesis.

Modules, one job each:

    model.py        build the conditional UNet from the config (channels = the domain's mode)
    data.py         the training side of the split as cached tensors, batches, light augmentation
    checkpoint.py   atomic checkpoints, keep-last-K, resume from the newest readable one
    train.py        the training loop (accelerate: CPU, one GPU with bf16, or ``accelerate launch``)
    pipeline.py     ClassConditionalPipeline: the diffusers pipeline, its __call__ is the guided sampling loop
    sampling.py     the samplers (make_sampler), exporting (save_pretrained) and loading the pipeline
    synthesis.py    balanced, resumable PNG synthesis with a manifest, through the exported pipeline
    stage.py        the two pipeline stages (train_generator_stage, synthesis_stage)
    cli.py          ``synth-augment generator train|sample|grid``
"""
