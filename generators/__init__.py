"""Model backends: they turn rendered prompts into generations (transformers, vLLM, diffusers)."""

from mmsynth.generators.types import Backend, Generation, GenerationRequest, Output, SamplingParams

__all__ = ["Backend", "Generation", "GenerationRequest", "Output", "SamplingParams"]
