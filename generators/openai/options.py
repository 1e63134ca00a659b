"""The recipe's `options:` for `backend: vllm-server` and its `launch:` block, and the base-URL rules."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LaunchOptions(BaseModel):
    """`launch:` - mmsynth starts and stops the vLLM servers itself (see generators/openai/launch.py)."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(
        default=1, ge=1, description="How many servers to start; requests go to the least busy."
    )
    python: str = Field(
        default=".venv-vllm/bin/python",
        description=(
            "Python of the vLLM environment (what `.ci/setup-vllm-env` builds). A relative path is "
            "relative to the current working directory, not to the recipe."
        ),
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Extra `vllm.entrypoints.openai.api_server` flags, e.g. `{max-model-len: 4096, "
            "enforce-eager: true, limit-mm-per-prompt: {image: 1}}`. true is a bare flag; dicts and "
            "lists are passed as JSON. --model, --host, --port and --served-model-name are set by mmsynth."
        ),
    )
    startup_timeout_s: float = Field(
        default=600, gt=0, description="Seconds each server may take to answer /health before the run fails."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables for the servers (e.g. `VLLM_CPU_KVCACHE_SPACE: '4'`, `CUDA_VISIBLE_DEVICES`).",
    )
    ports: list[int] | None = Field(
        default=None, description="One port per replica on 127.0.0.1; null picks free ports."
    )
    log_dir: str | None = Field(
        default=None,
        description="Folder for the servers' logs (`replica-<i>.log`); null: a new folder under the system temp dir.",
    )


class OpenAIOptions(BaseModel):
    """The recipe's `options:` for `backend: vllm-server`."""

    # hide_input_in_errors: a refused value (a URL with a password in it) is never echoed back.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    base_url: str | list[str] | None = Field(
        default=None,
        description=(
            "Base URL of the server, ending in /v1 (e.g. `http://127.0.0.1:8000/v1`), or a list of URLs "
            "of replicas serving the same model. Exactly one of base_url and launch is required."
        ),
    )
    served_model_name: str | None = Field(
        default=None,
        description="The model name the server knows (`model` in each request); default: the model path.",
    )
    api_key_env: str | None = Field(
        default=None,
        description=(
            "Name of the environment variable that holds the API key (sent as a Bearer token). Default: "
            "OPENAI_API_KEY when it is set, else no key. The key itself never goes in a recipe or a log."
        ),
    )
    max_concurrency: int = Field(
        default=512,
        ge=1,
        description=(
            "Most requests in flight at once to each replica (its limiter's cap); a GPU vLLM server "
            "batches hundreds of sequences, so the default does not throttle one."
        ),
    )
    initial_concurrency: int = Field(
        default=8,
        ge=1,
        description=(
            "Requests in flight to each replica at the start; doubles per window of successes until the "
            "first overload or the cap, then grows by one per window."
        ),
    )
    timeout_s: float = Field(
        default=600,
        gt=0,
        description="Seconds one HTTP request may take; a timeout is retried and halves concurrency.",
    )
    max_retries: int = Field(
        default=5,
        ge=0,
        description="Retries of a transient error (429, 5xx, connection, timeout) before the run stops.",
    )
    backoff_initial_s: float = Field(
        default=0.5,
        ge=0,
        description="First retry delay; doubles each retry (plus jitter) up to backoff_max_s.",
    )
    backoff_max_s: float = Field(
        default=30, ge=0, description="Longest retry delay, unless Retry-After asks for more."
    )
    image_max_side: int | None = Field(
        default=None,
        ge=1,
        description="Downscale images so the longer side is at most this many pixels before sending; null: send as they are.",
    )
    image_format: Literal["png", "jpeg"] | None = Field(
        default=None,
        description="Re-encode every image as png or jpeg; null keeps the original bytes (a resized image becomes png).",
    )
    json_repair_attempts: int = Field(
        default=1,
        ge=0,
        le=5,
        description=(
            "For structured tasks: when an output is not JSON or breaks the schema, ask again with the error "
            "as a new user turn, at most this many times per output (0: never)."
        ),
    )
    launch: LaunchOptions | None = Field(
        default=None, description="Start vLLM servers for this model instead of using base_url."
    )

    @model_validator(mode="after")
    def _one_source(self) -> OpenAIOptions:
        if (self.base_url is None) == (self.launch is None):
            raise ValueError("set exactly one of base_url (a running server) and launch (mmsynth starts one)")
        urls = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url or [])
        if isinstance(self.base_url, list) and not urls:
            raise ValueError("base_url is an empty list")
        for u in urls:
            check_base_url(u)
        return self

    def urls(self) -> list[str]:
        """The configured base URLs without a trailing slash (empty with `launch`)."""
        b = self.base_url
        return [u.rstrip("/") for u in ([b] if isinstance(b, str) else list(b or []))]


def check_base_url(url: str) -> None:
    """ValueError unless `url` is a plain http(s) base URL; the message never echoes the URL (it may hold a secret)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("base_url is not a valid URL; write it like http://127.0.0.1:8000/v1") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("base_url must be an http(s) URL such as http://127.0.0.1:8000/v1")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "base_url must not hold credentials; put the key in an environment variable "
            "and name that variable in api_key_env"
        )
    if parts.query or parts.fragment:
        # A query is where gateways put tokens (`?token=...`, `?api-key=...`): it would reach logs.
        raise ValueError(
            "base_url must not hold a query string or fragment (a `?token=...` is a credential); "
            "put the key in an environment variable and name that variable in api_key_env"
        )


def join_url(base: str, path: str) -> str:
    """`base` + "/" + `path` with exactly one slash between them."""
    return f"{base.rstrip('/')}/{path.lstrip('/')}"


def server_root(base: str) -> str:
    """The server's root for /health: the base URL without its trailing /v1."""
    base = base.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base
