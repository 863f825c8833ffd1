"""Training tasks: detector, landmark refiner, multi-task recognizer (model, data, losses and validation of each)."""
