from hyperhive.harness.main import main

main()
