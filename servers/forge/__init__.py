"""The forge: git repos over smart HTTP behind the hive's tokens, grants, push events, the docs repo."""
