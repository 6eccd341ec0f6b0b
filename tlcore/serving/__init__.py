"""Models out: prediction, Grad-CAM explanations, exports."""
