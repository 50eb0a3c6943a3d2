"""From a rendered context to an image in the engine and the registry: engine, versions, push, assembly, caches."""
