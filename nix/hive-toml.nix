# An attribute set as TOML text: how services.hyperhive writes hive.toml.
#
# Plain builtins, no nixpkgs: the Python tests evaluate it with `nix-instantiate --eval` and load
# the result with hyperhive's own config loader, so what the module writes is what `hive` reads.
# Tables come after the scalars of their parent; null values are left out (hyperhive's default).
let
  inherit (builtins)
    attrNames
    concatLists
    concatStringsSep
    filter
    isAttrs
    isBool
    isFloat
    isInt
    isList
    isPath
    isString
    match
    toJSON
    typeOf
    ;

  key = name: if match "[A-Za-z0-9_-]+" name != null then name else toJSON name;

  # JSON's strings, numbers and arrays are TOML's too.
  value =
    v:
    if isBool v then
      (if v then "true" else "false")
    else if isList v then
      "[" + concatStringsSep ", " (map value v) + "]"
    else if isString v || isInt v || isFloat v then
      toJSON v
    else if isPath v then
      toJSON (toString v)
    else
      throw "hive.toml: a ${typeOf v} cannot be written as TOML";

  table =
    path: attrs:
    let
      names = filter (name: attrs.${name} != null) (attrNames attrs);
      scalars = filter (name: !isAttrs attrs.${name}) names;
      tables = filter (name: isAttrs attrs.${name}) names;
      header = if path == [ ] then [ ] else [ "[${concatStringsSep "." (map key path)}]" ];
      own = map (name: "${key name} = ${value attrs.${name}}") scalars;
    in
    (if own == [ ] && path != [ ] then [ ] else header ++ own ++ [ "" ])
    ++ concatLists (map (name: table (path ++ [ name ]) attrs.${name}) tables);
in
settings:
concatStringsSep "\n" (
  [ "# Written by the NixOS module services.hyperhive; change it there, not here." ] ++ table [ ] settings
)
