"""Training: one fold's loop (train_one_epoch, evaluate, train_fold) and its logs and curves."""
