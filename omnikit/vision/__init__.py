"""Vision: ViT frame encoders (timm backbones), patch mergers, tubelet embeddings."""
