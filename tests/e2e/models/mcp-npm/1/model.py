from clarifai.runners.models.stdio_mcp_class import StdioMCPModelClass


class MemoryBridge(StdioMCPModelClass):
    pass
