# hyperhive (the `hive` command), for `pkgs.callPackage ./package.nix { }`.
#
# Why some packages come from pinned PyPI wheels: pyproject.toml pins fastmcp, mcp, nicegui and
# claude-agent-sdk to exact versions (and needs httpx2 >= 2.16), and nixpkgs lags behind them. So
# those packages, and the two that move in lockstep with them (fastmcp-slim, mcp-types, httpcore2),
# are replaced in the interpreter's package set by the very wheels pip installs; everything else is
# the nixpkgs package of the same name. The hashes were taken from the wheel files on PyPI.
#
# Refreshing a pin: change `version` below (and in pyproject.toml), then hash the new wheel:
#   pip download --no-deps --only-binary=:all: NAME==VERSION -d /tmp/wheels
#   nix hash to-sri --type sha256 $(sha256sum /tmp/wheels/NAME-VERSION-*.whl | cut -d' ' -f1)
# (claude-agent-sdk is a platform wheel: add `--platform manylinux_2_17_x86_64`). Or set
# `hash = lib.fakeHash;`, build, and copy the hash Nix reports.
{
  lib,
  python3,
  fetchPypi,
  git,
  autoPatchelfHook,
}:

let
  # One line per package, keyed by its PyPI name: tests read these.
  pinned = {
    fastmcp = { version = "4.1.2"; hash = "sha256-PV7d/mJLAC688gLVpV/xO9zmklzli/yusovC47vuGDA="; };
    fastmcp-slim = { version = "4.1.2"; hash = "sha256-WKTlR6D4XP7i0iGWd+0xwPHEkRdBpckaHuX79p3eNfo="; };
    mcp = { version = "2.3.0"; hash = "sha256-3QxEwInRZFPorjGjh3oAVNeiMUyqqB9eBUG5sXNLI3c="; };
    mcp-types = { version = "2.3.0"; hash = "sha256-lo79va7fqwatrkDTeKNDlfEJDFkh1L48nN4oOq922R0="; };
    nicegui = { version = "3.18.0"; hash = "sha256-or1RZCMS2YqrbYtkEkXXlv8bidpYKXdxcLzEiBQMPc0="; };
    claude-agent-sdk = { version = "0.2.187"; platform = "manylinux_2_17_x86_64"; hash = "sha256-aTEyKW0f/KhXtdOT5En9E4qJvQgCTZo+UZYVukBA2cM="; };
    httpx2 = { version = "2.16.2"; hash = "sha256-8FwTqt5MRdvxyQYGR6EFjwrK1iOY+tludBJp7bM9RvU="; };
    httpcore2 = { version = "2.16.2"; hash = "sha256-FgUa4qQvd2AHVD8y3pNJoxeyPSy7ThRWtLrA6IuHQZo="; };
  };

  # The wheel of a pinned package, e.g. fastmcp_slim-4.1.2-py3-none-any.whl.
  fetchWheel =
    name:
    let
      pin = pinned.${name};
    in
    fetchPypi (
      {
        pname = builtins.replaceStrings [ "-" ] [ "_" ] name; # wheel file names use underscores
        inherit (pin) version hash;
        format = "wheel";
        dist = "py3";
        python = "py3";
      }
      // lib.optionalAttrs (pin ? platform) { inherit (pin) platform; }
    );

  # A pinned package installed from its wheel. `dependencies` follow the wheel's Requires-Dist;
  # nixpkgs' versions of them may differ from what the wheel asks for, so the check is off.
  fromWheel =
    final: name: args:
    final.buildPythonPackage (
      {
        pname = name;
        inherit (pinned.${name}) version;
        format = "wheel";
        src = fetchWheel name;
        doCheck = false;
        dontCheckRuntimeDeps = true;
      }
      // args
    );

  python = python3.override {
    self = python;
    packageOverrides = final: prev: {
      httpcore2 = fromWheel final "httpcore2" {
        dependencies = with final; [
          anyio # the asyncio extra
          h11
          truststore
        ];
        pythonImportsCheck = [ "httpcore2" ];
      };

      httpx2 = fromWheel final "httpx2" {
        dependencies = with final; [
          anyio
          httpcore2
          idna
          truststore
          typing-extensions
        ];
        pythonImportsCheck = [ "httpx2" ];
      };

      mcp-types = fromWheel final "mcp-types" {
        dependencies = with final; [
          pydantic
          typing-extensions
        ];
        pythonImportsCheck = [ "mcp_types" ];
      };

      mcp = fromWheel final "mcp" {
        dependencies = with final; [
          anyio
          cryptography # pyjwt[crypto]
          httpx2
          jsonschema
          mcp-types
          opentelemetry-api
          pydantic
          pyjwt
          python-multipart
          sse-starlette
          starlette
          typing-extensions
          typing-inspection
          uvicorn
        ];
        pythonImportsCheck = [ "mcp" ];
      };

      fastmcp-slim =
        let
          # py-key-value-aio[filetree,keyring,memory]
          keyValue = with final; [
            py-key-value-aio
            aiofile
            anyio
            keyring
            cachetools
          ];
          mcpDeps = with final; [
            exceptiongroup
            httpx2
            mcp
            opentelemetry-api
            starlette
          ];
        in
        fromWheel final "fastmcp-slim" {
          dependencies = with final; [
            email-validator # pydantic[email]
            mcp-types
            platformdirs
            pydantic
            pydantic-settings
            python-dotenv
            rich
            typing-extensions
          ];
          optional-dependencies = {
            client = [ final.authlib ] ++ mcpDeps ++ keyValue;
            server =
              with final;
              [
                authlib
                cyclopts
                griffelib
                joserfc
                jsonref
                jsonschema-path
                openapi-pydantic
                packaging
                pyperclip
                python-multipart
                pyyaml
                uncalled-for
                uvicorn
                watchfiles
                websockets
              ]
              ++ mcpDeps
              ++ keyValue;
          };
          pythonImportsCheck = [ "fastmcp" ];
        };

      # A metadata-only wheel: fastmcp-slim[client,server].
      fastmcp = fromWheel final "fastmcp" {
        dependencies = lib.unique (
          [ final.fastmcp-slim ]
          ++ final.fastmcp-slim.optional-dependencies.client
          ++ final.fastmcp-slim.optional-dependencies.server
        );
        pythonImportsCheck = [
          "fastmcp.client"
          "fastmcp.server"
        ];
      };

      nicegui = fromWheel final "nicegui" {
        dependencies = with final; [
          aiofiles
          aiohttp # python-socketio[asyncio-client]
          anyio
          certifi
          docutils
          fastapi
          h11
          httpx
          idna
          ifaddr
          itsdangerous
          jinja2
          markdown2
          multidict
          orjson
          pydantic-core
          pygments
          python-dotenv
          python-multipart
          python-socketio
          starlette
          tinycss2
          typing-extensions
          uvicorn
          # uvicorn[standard]
          httptools
          pyyaml
          uvloop
          watchfiles
          websockets
        ];
        pythonImportsCheck = [ "nicegui" ];
      };

      # The wheel bundles the Claude Code CLI (_bundled/claude, a Bun executable that keeps its
      # JavaScript in an ELF section): point it at Nix's dynamic loader, and never strip it.
      claude-agent-sdk = fromWheel final "claude-agent-sdk" {
        dependencies = with final; [
          anyio
          jsonschema
          mcp
          sniffio
        ];
        nativeBuildInputs = [ autoPatchelfHook ];
        dontStrip = true;
        pythonImportsCheck = [ "claude_agent_sdk" ];
        meta.platforms = [ "x86_64-linux" ];
      };
    };
  };

  pyproject = lib.importTOML ../pyproject.toml;

  # pyproject.toml's [project] dependencies.
  dependencies = with python.pkgs; [
    aiosqlite
    anyio
    claude-agent-sdk
    click
    dbus-fast
    fastmcp
    httptools
    httpx2
    joserfc
    mcp
    nicegui
    psycopg
    psycopg-pool
    pydantic
    typing-extensions
    uvicorn
    uvloop
  ];

  hyperhive = python.pkgs.buildPythonApplication {
    pname = "hyperhive";
    inherit (pyproject.project) version;
    pyproject = true;

    # What the wheel is built from; tests, benchmarks, nix/ and local build output stay out.
    src = lib.fileset.toSource {
      root = ../.;
      fileset =
        let
          sources = dir: lib.fileset.difference dir (lib.fileset.fileFilter (file: file.hasExt "pyc") dir);
        in
        lib.fileset.unions [
          ../pyproject.toml
          ../README.md
          (sources ../servers)
          (sources ../harness)
          (sources ../ui)
        ];
    };

    build-system = [ python.pkgs.setuptools ];

    inherit dependencies;

    # Its lower bounds are pip's business; here the versions are nixpkgs' (or the pins above).
    pythonRelaxDeps = true;

    makeWrapperArgs = [
      # The lifecycle server keeps each agent's config in a git repo.
      "--prefix"
      "PATH"
      ":"
      (lib.makeBinPath [ git ])
      # `hive up` starts each server as `sys.executable -m hyperhive.servers.cli`: that bare
      # interpreter must find hyperhive and its dependencies too.
      "--prefix"
      "PYTHONPATH"
      ":"
      "${placeholder "out"}/${python.sitePackages}:${python.pkgs.makePythonPath dependencies}"
    ];

    # The test suite runs real servers and sandboxes; the import checks catch a missing dependency.
    doCheck = false;
    pythonImportsCheck = [
      "hyperhive.servers.cli"
      "hyperhive.harness.main"
      "hyperhive.ui.app"
    ];

    passthru = {
      # The interpreter with the pinned packages above.
      inherit python;
      # An interpreter that imports hyperhive with no environment variables at all (what a sandbox
      # with a cleared environment needs to run `python -m hyperhive.harness`).
      pythonEnv = python.withPackages (_: [ (python.pkgs.toPythonModule hyperhive) ]);
    };

    meta = {
      description = pyproject.project.description;
      mainProgram = "hive";
      platforms = lib.platforms.linux;
    };
  };
in
hyperhive
