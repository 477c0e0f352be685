"""The feature extractor: VGG16/VGG19 with named layers (``layer_names``, no torch) and its weights (``vgg``)."""
