"""The classifier panel: the CNN zoo (timm), fits with early stopping, k-fold CV, the classifiers stage.

Importing the package registers AlexNet and GoogLeNet into timm's registry (classifiers.zoo), so
``import classifiers; timm.create_model("alexnet")`` works like any timm architecture.
"""

from classifiers import zoo  # noqa: F401  (registration is the import's side effect)
