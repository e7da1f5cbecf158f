"""`python -m hyperhive.servers.cli`: how `hive up` starts each server (a bare interpreter)."""

from hyperhive.servers.cli import main

if __name__ == "__main__":
    main()
