"""Models: the registry (build, describe, rebuild), FCN32-VGG11, encoder weights, the forward
pass and its precision policy, and the losses."""
