"""One module per ``igw`` subcommand that is a tool; the processes' commands live with them."""
