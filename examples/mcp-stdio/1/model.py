from clarifai.runners.models.stdio_mcp_class import StdioMCPModelClass


class NotesBridge(StdioMCPModelClass):
    pass
