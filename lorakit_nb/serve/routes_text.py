"""The text route of ``lorakit serve``: ``POST /v1/completions`` (OpenAI-compatible text completion).

Covers: ``CompletionBody`` (the request body as a pydantic model: types and ranges),
``completion_request`` (a checked body -> the arguments of ``TextEngine.complete``; each refusal a
``ServeError`` with the kit's code for the field, e.g. ``invalid_max_tokens``) and ``router``.
``model`` names an adapter or the bare base; ``strength`` sets the adapter's strength per request.

Does not: run llama.cpp (``llm``), stream tokens, or apply a chat template.
"""
from __future__ import annotations

import asyncio
from typing import Annotated, Literal, Optional, Union

from fastapi import APIRouter, Request  # module level: FastAPI resolves the route annotations from here
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse

from lorakit_nb.serve.context import read_json, require_content_type, served
from lorakit_nb.serve.errors import ServeError
from lorakit_nb.serve.llm import MAX_STOP, MAX_STRENGTH, MAX_TOKENS

router = APIRouter()
EXAMPLE = '{"model": "wu-mandarin", "prompt": "...", "max_tokens": 40, "strength": 0.8}'


class CompletionBody(BaseModel):
    """Example: CompletionBody.model_validate({"model": "wu-mandarin", "prompt": "侬好"}).max_tokens == 16."""

    model_config = ConfigDict(strict=True, extra="ignore")  # strict: "0.8" is not a number, true is not 1

    model: str = Field(min_length=1)
    prompt: Union[str, list[str]]
    max_tokens: int = Field(16, ge=1, le=MAX_TOKENS)
    temperature: float = Field(0.0, ge=0, le=2)
    stop: Union[str, Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOP)], None] = None
    strength: Optional[float] = Field(None, ge=0, le=MAX_STRENGTH)
    stream: Optional[Literal[False]] = None
    echo: Optional[Literal[False]] = None
    n: Optional[Literal[1]] = None
    best_of: Optional[Literal[1]] = None
    logprobs: Optional[Literal[0]] = None
    suffix: None = None


# field -> (code, message) when CompletionBody refuses it; {names}: the models this server has
FIELD_ERRORS = {
    "model": ("missing_model", '"model" is needed: one of {names} (GET /v1/models)'),
    "prompt": ("invalid_prompt", '"prompt" must be one string (one completion per request)'),
    "max_tokens": ("invalid_max_tokens", f'"max_tokens" must be an integer from 1 to {MAX_TOKENS}'),
    "temperature": ("invalid_temperature", '"temperature" must be a number from 0 (greedy, the default) to 2'),
    "stop": ("invalid_stop", f'"stop" must be a string or a list of at most {MAX_STOP} non-empty strings'),
    "strength": ("invalid_strength", f'"strength" must be a number from 0 (the base model) to {MAX_STRENGTH}'),
}


def _refusal(exc: ValidationError, names: list[str]) -> ServeError:
    """The first field pydantic refused, in the kit's words (``unsupported_<field>`` for OpenAI extras)."""
    field = str(exc.errors()[0]["loc"][0])
    code, message = FIELD_ERRORS.get(field, (f"unsupported_{field}",
                                             f'"{field}" is not supported by this service; omit it'))
    return ServeError(400, code, message.format(names=", ".join(names)))


def completion_request(payload: dict, llm, max_prompt_chars: int) -> dict:
    """The checked arguments of ``TextEngine.complete`` from an OpenAI ``/v1/completions`` body; 4xx on bad fields.

    Example: completion_request({"model": "gemma-3-270m", "prompt": "hi"}, llm, 8000)["strength"] == 0.0
    """
    try:
        body = CompletionBody.model_validate(payload)
    except ValidationError as exc:
        raise _refusal(exc, llm.names) from None
    if body.model not in llm.names:
        raise ServeError(404, "model_not_found", f"model {body.model!r} is not served here; use one of "
                         f"{', '.join(llm.names)} (GET /v1/models)")
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise ServeError(400, *FIELD_ERRORS["prompt"])
        prompt = prompt[0]
    if not prompt.strip():
        raise ServeError(400, "empty_prompt", '"prompt" is empty; send the text to continue, e.g. '
                         '"Translate Wu dialect to Mandarin: 侬好\nMandarin:"')
    if len(prompt) > max_prompt_chars:
        raise ServeError(413, "prompt_too_large", f"the prompt has {len(prompt)} characters; the limit is "
                         f"{max_prompt_chars}")
    is_base = body.model == llm.base_name
    strength = body.strength if body.strength is not None else (0.0 if is_base else 1.0)
    if is_base and strength != 0:
        raise ServeError(400, "invalid_strength", f"model {body.model!r} is the base model and has no adapter to "
                         f"scale; omit \"strength\" or name an adapter ({', '.join(llm.names[1:]) or 'none loaded'})")
    stop = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
    return {"prompt": prompt, "model": body.model, "strength": float(strength), "max_tokens": body.max_tokens,
            "stop": [s for s in stop if s], "temperature": float(body.temperature)}


@router.post("/v1/completions")
async def completions(request: Request):
    srv = served(request)
    srv.authorize(request)
    llm = srv.text()
    require_content_type(request, "application/json", f"application/json like {EXAMPLE}")
    req = completion_request(await read_json(request, EXAMPLE), llm, srv.settings.max_prompt_chars)
    timeout = srv.settings.request_timeout
    try:
        out = await asyncio.wait_for(llm.complete(req.pop("prompt"), **req), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        raise ServeError(504, "generation_timeout", f"no completion within {timeout:g} s; the server is overloaded, "
                         "retry later", {"Retry-After": str(llm.retry_after())}) from None
    request.state.tokens = out["usage"]["completion_tokens"]
    return JSONResponse(out)
