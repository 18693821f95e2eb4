"""The data catalog: the format -> reader table, the folder scanner and the validated catalog."""
