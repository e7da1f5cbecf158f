"""The dashboard as NiceGUI's user simulation runs it: the real app, on the hive at $HIVE_TEST_HOME."""

import os
import time
from pathlib import Path

from nicegui import ui

from hyperhive.servers.common.config import load_hive_config
from hyperhive.servers.common.issuer import issue_token
from hyperhive.ui.app import read_password, setup, storage_secret
from hyperhive.ui.auth import LoginCode

config = load_hive_config(Path(os.environ["HIVE_TEST_HOME"]))
token = issue_token(config, "operator", 3600)
password = read_password(config.home / "dashboard.password")
code = LoginCode(os.environ["HIVE_TEST_LOGIN_CODE"], time.monotonic() + 600)  # as `hive up` makes one
root = setup(config, token, password, interval=0.2, login_code=code)
ui.run(root, storage_secret=storage_secret(password), dark=True, reload=False, show=False)
