import os

from clarifai.runners.models.agentic_class import AgenticModelClass
from clarifai.runners.models.model_class import ModelClass


class Agent(AgenticModelClass):
    """Chat through the backend named by AGENT_BACKEND_URL, with the MCP tools a request names."""

    base_url = os.environ.get("AGENT_BACKEND_URL")
    model = "scripted"

    @ModelClass.method
    def predict(self, prompt: str) -> str:
        return self.chat([{"role": "user", "content": prompt}])
