from sockctl.cli import main

main()
