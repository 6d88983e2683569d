"""Theory tools: the noisy quadratic model, the gradient noise scale, the linear-scaling check."""
