"""The model: the projection head (the one file that ships inside saved models), the layout of a model, building it."""
