"""Provider-side checks and resources shared by the cloud drivers."""
