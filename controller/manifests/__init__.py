"""Manifests: the declarative input, one model per YAML/JSON document, a folder of files.

``document`` is one manifest (pydantic, ``extra="forbid"``, field-named errors); ``model`` is
``LoadedModel`` (a manifest, its file, its weights: the type the rest of modelctl takes);
``loader`` reads a folder into ``LoadedModel``s with file:line:document located errors,
``reading`` bounding every step of reading it (the folder is hostile input); ``flags`` says which
engine flags modelctl owns; ``envrefs`` fills ``${NAME}`` secrets from the controller's
environment (allowed names only); ``sizes`` reads sizes and durations ('24GiB', '10m');
``quoting`` bounds the values error messages quote; ``schema`` writes the JSON Schema editors use.
Nothing here knows about GPUs, containers or HTTP.
"""
