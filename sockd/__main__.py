from sockd.main import main

main()
