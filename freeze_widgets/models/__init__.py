"""Model loading: torchvision names, timm and transformers hubs, the weights/offline leaf."""
