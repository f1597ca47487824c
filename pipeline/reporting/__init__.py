"""What people see: heat-map images and progress lines."""
