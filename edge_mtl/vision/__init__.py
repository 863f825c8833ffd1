"""Image geometry shared by training and runtime: alignment and drawing."""
