"""The start-up checks of a server: it answers, it is healthy, and it serves the model we name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmsynth.generators.openai.errors import AUTH, ServerError, server_message
from mmsynth.generators.openai.options import join_url, server_root
from mmsynth.generators.openai.transport import Transport, TransportFailure, TransportTimeout
from mmsynth.prompts.names import did_you_mean


@dataclass(frozen=True)
class ServerInfo:
    served_model_name: str  # the name to send: the one asked for, or the server's spelling of the same folder
    models: list[str]  # what /v1/models listed
    context_length: int | None  # vLLM's max_model_len, when the server says


async def check_server(
    transport: Transport, url: str, headers: dict[str, str], name: str, path: str
) -> ServerInfo:
    """GET /health (404 tolerated: not every server has it) and GET /v1/models (must list `name`).

    Raises ServerError naming the URL (callers scrub it): unreachable, unhealthy, or the model is not
    served (with the names that are, and the closest one).
    """
    root = server_root(url)
    try:
        health = await transport.get(join_url(root, "health"), timeout_s=10.0)
        models = await transport.get(join_url(url, "models"), headers=headers, timeout_s=10.0)
    except (TransportFailure, TransportTimeout) as e:
        raise ServerError(f"cannot reach the server at {url}: {e}. Is it running?") from None
    if health.status >= 500:
        raise ServerError(f"{root}/health answered {health.status}: {server_message(health)}")
    if models.status != 200:
        raise ServerError(
            f"{url}/models answered {models.status}: {server_message(models)}"
            + (" (is api_key_env set to the right variable?)" if models.status in AUTH else "")
        )
    try:
        served = {m["id"]: m for m in models.json()["data"]}
    except (ValueError, KeyError, TypeError):
        raise ServerError(f"{url}/models did not answer an OpenAI model list") from None
    if name not in served:
        same = [m for m in served if _same_folder(m, path)]
        if len(same) == 1:
            name = same[0]
        else:
            hint = did_you_mean(name, served, cutoff=0.3)
            hint += " Set options.served_model_name." if hint else ""
            raise ServerError(
                f"the server at {url} does not serve model {name!r}; it serves: "
                f"{', '.join(map(repr, served)) or 'nothing'}.{hint}"
            )
    max_len = served[name].get("max_model_len")
    return ServerInfo(name, list(served), max_len if isinstance(max_len, int) else None)


def _same_folder(a: str, b: str) -> bool:
    try:
        pa, pb = Path(a).expanduser(), Path(b).expanduser()
        return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()
    except OSError:
        return False
