"""Images: intake (decode, orientation), later prepare (sizing) and temp files."""
