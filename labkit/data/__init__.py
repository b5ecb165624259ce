"""Data generators and loaders. Synthetic, or shipped inside a package; never a download at run time."""
