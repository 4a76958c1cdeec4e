"""The embedding cache of the frozen encoder and the training-time input module that serves it."""
