"""hfpref: preference training for audio-language models in the Hugging Face ecosystem."""

# Registers the reward model with AutoConfig/AutoModel, so `AutoModel.from_pretrained` loads a saved reward model
# after a plain `import hfpref` (never through trust_remote_code).
from ._version import __version__  # noqa: F401
from .models import modeling_clap_reward as _modeling_clap_reward  # noqa: E402, F401
