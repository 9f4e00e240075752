// Microsoft's JavaScript Durable Task SDK (@microsoft/durabletask-js) against our sidecar.
//
// Usage: node scenarios.js HOST:PORT
// Starts one JavaScript worker with every function below, runs all scenarios at once with the
// JavaScript client, prints "PASS <name>" or "FAIL <name>: <why>" per scenario and exits 1 if any
// failed. Each scenario checks what the SDK reports (status, output, failure details, entity state).
"use strict";

const assert = require("node:assert/strict");
const {
  TaskHubGrpcClient,
  TaskHubGrpcWorker,
  OrchestrationStatus,
  EntityInstanceId,
  TaskEntity,
  RetryPolicy,
  TaskFailedError,
  VersionFailureStrategy,
  VersionMatchStrategy,
  terminateOptions,
  whenAll,
  whenAny,
} = require("@microsoft/durabletask-js");
// The SDK's generated messages, for a request its client does not build (a traced signal).
const pb = require("@microsoft/durabletask-js/dist/proto/orchestrator_service_pb");
const { StringValue } = require("google-protobuf/google/protobuf/wrappers_pb");

const WAIT_SECONDS = 30;
const RUN = Date.now().toString(36);

// Only warnings and errors, to stderr (the SDK logs every work item at info).
const quietLogger = {
  error: (message, ...args) => console.error("[sdk error]", message, ...args),
  warn: (message, ...args) => console.error("[sdk warn]", message, ...args),
  info: () => {},
  debug: () => {},
};

// Activities ----------------------------------------------------------------------------------

const attempts = new Map();

function greet(_ctx, name) {
  return `Hello, ${name}!`;
}

function square(_ctx, value) {
  return value * value;
}

function flaky(_ctx, spec) {
  const attempt = (attempts.get(spec.key) || 0) + 1;
  attempts.set(spec.key, attempt);
  if (attempt <= spec.failures) {
    throw new Error(`attempt ${attempt} fails`);
  }
  return attempt;
}

function failing(_ctx, message) {
  throw new Error(message);
}

// Entities ------------------------------------------------------------------------------------

class Counter extends TaskEntity {
  initializeState() {
    return 0;
  }
  add(amount) {
    this.state += amount;
    return this.state;
  }
  get() {
    return this.state;
  }
}

// Orchestrators -------------------------------------------------------------------------------

async function* chain(ctx) {
  const out = [];
  for (const city of ["Tokyo", "Seattle", "London"]) {
    out.push(yield ctx.callActivity(greet, city));
  }
  return out;
}

async function* fanOut(ctx, width) {
  const tasks = [];
  for (let i = 0; i < width; i++) {
    tasks.push(ctx.callActivity(square, i));
  }
  const results = yield whenAll(tasks);
  return results.reduce((a, b) => a + b, 0);
}

async function* timer(ctx) {
  const started = ctx.currentUtcDateTime.getTime();
  yield ctx.createTimer(1);
  return ctx.currentUtcDateTime.getTime() - started;
}

async function* approval(ctx) {
  const approved = ctx.waitForExternalEvent("approval");
  const timeout = ctx.createTimer(3600);
  const winner = yield whenAny([approved, timeout]);
  return winner === approved ? { approved: approved.getResult() } : "timed out";
}

async function* child(ctx, input) {
  const greeting = yield ctx.callActivity(greet, input);
  return { child: ctx.instanceId, greeting };
}

async function* parent(ctx, input) {
  const result = yield ctx.callSubOrchestrator(child, input, { instanceId: `${ctx.instanceId}-child` });
  return result.greeting;
}

async function* retried(ctx, key) {
  const retry = new RetryPolicy({ maxNumberOfAttempts: 4, firstRetryIntervalInMilliseconds: 200 });
  const activity = yield ctx.callActivity(flaky, { key: `${key}/activity`, failures: 2 }, { retry });
  const sub = yield ctx.callSubOrchestrator(flakyChild, { key: `${key}/child`, failures: 1 }, { retry });
  return { activity, sub };
}

async function* flakyChild(ctx, spec) {
  return yield ctx.callActivity(flaky, spec);
}

async function* catches(ctx) {
  try {
    yield ctx.callActivity(failing, "caught in code");
    return "not thrown";
  } catch (err) {
    return { isTaskFailed: err instanceof TaskFailedError, message: err.details.message, type: err.details.errorType };
  }
}

async function* fails(ctx) {
  yield ctx.callActivity(failing, "nobody catches this");
}

async function* waitsForever(ctx) {
  return yield ctx.waitForExternalEvent("never");
}

async function* counts(ctx, state) {
  if (state.n < 3) {
    ctx.continueAsNew({ n: state.n + 1, seen: [...state.seen, state.n] }, false);
    return;
  }
  return state.seen;
}

async function* entityWork(ctx, key) {
  const counter = new EntityInstanceId("counter", key);
  const lock = yield ctx.entities.lockEntities(counter);
  let inside;
  try {
    yield ctx.entities.callEntity(counter, "add", 5);
    inside = yield ctx.entities.callEntity(counter, "get");
  } finally {
    lock.release();
  }
  ctx.entities.signalEntity(counter, "add", 100);
  return inside;
}

async function* versioned(ctx) {
  return `ran as ${ctx.version}`;
}

async function* rewindable(ctx, key) {
  return yield ctx.callActivity(flaky, { key, failures: 1 });
}

// Scenarios -----------------------------------------------------------------------------------

function id(name) {
  return `js-${RUN}-${name}`;
}

async function completed(client, instanceId) {
  const state = await client.waitForOrchestrationCompletion(instanceId, true, WAIT_SECONDS);
  assert.ok(state, `${instanceId} not found`);
  return state;
}

async function output(client, instanceId) {
  const state = await completed(client, instanceId);
  const failure = state.failureDetails ? state.failureDetails.message : "";
  assert.equal(OrchestrationStatus[state.runtimeStatus], "COMPLETED", `${instanceId}: ${failure}`);
  return JSON.parse(state.serializedOutput);
}

async function until(what, check) {
  const deadline = Date.now() + WAIT_SECONDS * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// An entity's state, or undefined while it has none: an entity whose first signal is due exists
// before that signal has run, and the SDK's metadata then throws on reading its state.
async function entityState(client, entity) {
  const metadata = await client.getEntity(entity);
  return metadata?.includesState ? metadata.state : undefined;
}

async function statusOf(client, instanceId) {
  const state = await client.getOrchestrationState(instanceId, false);
  return state ? OrchestrationStatus[state.runtimeStatus] : undefined;
}

const scenarios = {
  async chain(client) {
    const instance = await client.scheduleNewOrchestration(chain, undefined, id("chain"));
    assert.deepEqual(await output(client, instance), ["Hello, Tokyo!", "Hello, Seattle!", "Hello, London!"]);
  },
  async fanOut(client) {
    const instance = await client.scheduleNewOrchestration(fanOut, 20, id("fan-out"));
    assert.equal(await output(client, instance), 2470);
  },
  async timer(client) {
    const instance = await client.scheduleNewOrchestration(timer, undefined, id("timer"));
    const elapsed = await output(client, instance);
    assert.ok(elapsed >= 1000, `timer fired after ${elapsed} ms of orchestration time`);
  },
  async externalEvent(client) {
    const instance = await client.scheduleNewOrchestration(approval, undefined, id("event"));
    await client.waitForOrchestrationStart(instance, false, WAIT_SECONDS);
    await client.raiseOrchestrationEvent(instance, "approval", { by: "js" });
    assert.deepEqual(await output(client, instance), { approved: { by: "js" } });
  },
  async subOrchestration(client) {
    const instance = await client.scheduleNewOrchestration(parent, "child", id("parent"));
    assert.equal(await output(client, instance), "Hello, child!");
    const childState = await client.getOrchestrationState(`${instance}-child`);
    assert.equal(OrchestrationStatus[childState.runtimeStatus], "COMPLETED");
  },
  async retries(client) {
    const instance = await client.scheduleNewOrchestration(retried, id("retries"), id("retries"));
    assert.deepEqual(await output(client, instance), { activity: 3, sub: 2 });
  },
  async failureCaught(client) {
    const instance = await client.scheduleNewOrchestration(catches, undefined, id("caught"));
    assert.deepEqual(await output(client, instance), { isTaskFailed: true, message: "caught in code", type: "Error" });
  },
  async failureUncaught(client) {
    const instance = await client.scheduleNewOrchestration(fails, undefined, id("uncaught"));
    const state = await completed(client, instance);
    assert.equal(OrchestrationStatus[state.runtimeStatus], "FAILED");
    assert.match(state.failureDetails.message, /nobody catches this/);
  },
  async continueAsNew(client) {
    const instance = await client.scheduleNewOrchestration(counts, { n: 0, seen: [] }, id("continue"));
    assert.deepEqual(await output(client, instance), [0, 1, 2]);
  },
  async terminate(client) {
    const instance = await client.scheduleNewOrchestration(waitsForever, undefined, id("terminate"));
    await client.waitForOrchestrationStart(instance, false, WAIT_SECONDS);
    await client.terminateOrchestration(instance, terminateOptions({ output: "stopped by js" }));
    const state = await completed(client, instance);
    assert.equal(OrchestrationStatus[state.runtimeStatus], "TERMINATED");
    assert.equal(JSON.parse(state.serializedOutput), "stopped by js");
  },
  async suspendResume(client) {
    const instance = await client.scheduleNewOrchestration(approval, undefined, id("suspend"));
    await client.waitForOrchestrationStart(instance, false, WAIT_SECONDS);
    await client.suspendOrchestration(instance);
    await until("SUSPENDED", async () => (await statusOf(client, instance)) === "SUSPENDED");
    await client.raiseOrchestrationEvent(instance, "approval", "while suspended");
    await client.resumeOrchestration(instance);
    assert.deepEqual(await output(client, instance), { approved: "while suspended" });
  },
  async restartUnderNewId(client) {
    const instance = await client.scheduleNewOrchestration(waitsForever, undefined, id("restart"));
    await client.waitForOrchestrationStart(instance, false, WAIT_SECONDS);
    await assert.rejects(client.restartOrchestration(instance, false), "a same-ID restart needs a finished instance");
    const fresh = await client.restartOrchestration(instance, true);
    assert.notEqual(fresh, instance);
    await client.waitForOrchestrationStart(fresh, false, WAIT_SECONDS);
    for (const target of [instance, fresh]) {
      await client.terminateOrchestration(target, "done");
      assert.equal(OrchestrationStatus[(await completed(client, target)).runtimeStatus], "TERMINATED");
    }
  },
  async rewind(client) {
    const instance = await client.scheduleNewOrchestration(rewindable, id("rewind"), id("rewind"));
    const failed = await completed(client, instance);
    assert.equal(OrchestrationStatus[failed.runtimeStatus], "FAILED");
    await client.rewindInstance(instance, "try again");
    await until("the rewound instance to finish", async () => (await statusOf(client, instance)) === "COMPLETED");
    assert.equal(await output(client, instance), 2);
  },
  async versioningFail(client) {
    const current = await client.scheduleNewOrchestration(versioned, undefined, { instanceId: id("v1"), version: "1.0" });
    assert.equal(await output(client, current), "ran as 1.0");
    const newer = await client.scheduleNewOrchestration(versioned, undefined, { instanceId: id("v2"), version: "2.0" });
    const state = await completed(client, newer);
    assert.equal(OrchestrationStatus[state.runtimeStatus], "FAILED", "a newer version fails on a 1.0 worker (FAIL)");
    assert.match(state.failureDetails.message, /2\.0/);
  },
  async entities(client) {
    const key = id("counter");
    const instance = await client.scheduleNewOrchestration(entityWork, key, id("entities"));
    assert.equal(await output(client, instance), 5);
    const counter = new EntityInstanceId("counter", key);
    await until("the signal from the orchestration", async () => (await entityState(client, counter)) === 105);
  },
  async delayedSignal(client) {
    const counter = new EntityInstanceId("counter", id("delayed"));
    await client.signalEntity(counter, "add", 7, { signalTime: new Date(Date.now() + 1500) });
    assert.equal(await client.getEntity(counter), undefined, "an entity with only a delayed signal does not exist yet");
    await until("the delayed signal", async () => (await entityState(client, counter)) === 7);
  },
  async tracedSignal(client) {
    // A signal carrying a trace context (the JavaScript client sends none) reaches the JavaScript
    // worker as a v1 batch (WorkItem.entityRequest, the context in OperationRequest.traceContext).
    const counter = new EntityInstanceId("counter", id("traced"));
    const request = new pb.SignalEntityRequest();
    request.setInstanceid(counter.toString());
    request.setName("add");
    request.setRequestid(id("traced-signal"));
    const input = new StringValue();
    input.setValue("9");
    request.setInput(input);
    const parent = new pb.TraceContext();
    parent.setTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    request.setParenttracecontext(parent);
    await new Promise((resolve, reject) => client._stub.signalEntity(request, (error) => (error ? reject(error) : resolve())));
    await until("the traced signal", async () => (await entityState(client, counter)) === 9);
  },
  async queries(client) {
    const prefix = id("query");
    const ids = [];
    for (let i = 0; i < 3; i++) {
      ids.push(await client.scheduleNewOrchestration(chain, undefined, `${prefix}-${i}`));
    }
    for (const instance of ids) await output(client, instance);
    const found = [];
    for await (const state of client.getAllInstances({ instanceIdPrefix: prefix, pageSize: 2 })) {
      found.push(state.instanceId);
    }
    assert.deepEqual(found.sort(), ids.sort());
    const page = await client.listInstanceIds({ runtimeStatus: [OrchestrationStatus.COMPLETED], pageSize: 1000 });
    for (const instance of ids) assert.ok(page.values.includes(instance), `${instance} not listed`);
    const history = await client.getOrchestrationHistory(ids[0]);
    assert.ok(history.length >= 8, `history of ${history.length} events`);
  },
};

async function main() {
  const address = process.argv[2];
  if (!address) throw new Error("usage: node scenarios.js HOST:PORT");
  const worker = new TaskHubGrpcWorker({
    hostAddress: address,
    logger: quietLogger,
    shutdownTimeoutMs: 5000,
    workItemFilters: "auto",
  });
  for (const fn of [chain, fanOut, timer, approval, child, parent, retried, flakyChild, catches, fails]) {
    worker.addOrchestrator(fn);
  }
  for (const fn of [waitsForever, counts, entityWork, rewindable]) worker.addOrchestrator(fn);
  for (const fn of [greet, square, flaky, failing]) worker.addActivity(fn);
  worker.addNamedEntity("counter", () => new Counter());
  // A second worker owns only the versioned orchestration (work item filters), at version 1.0 with FAIL.
  const versionedWorker = new TaskHubGrpcWorker({
    hostAddress: address,
    logger: quietLogger,
    shutdownTimeoutMs: 5000,
    versioning: {
      version: "1.0",
      matchStrategy: VersionMatchStrategy.CurrentOrOlder,
      failureStrategy: VersionFailureStrategy.Fail,
    },
    workItemFilters: { orchestrations: [{ name: "versioned" }] },
  });
  versionedWorker.addOrchestrator(versioned);
  await worker.start();
  await versionedWorker.start();
  const client = new TaskHubGrpcClient({ hostAddress: address, logger: quietLogger });
  const names = Object.keys(scenarios);
  const outcomes = await Promise.allSettled(names.map((name) => scenarios[name](client)));
  let failed = 0;
  outcomes.forEach((outcome, i) => {
    if (outcome.status === "fulfilled") {
      console.log(`PASS ${names[i]}`);
    } else {
      failed += 1;
      console.log(`FAIL ${names[i]}: ${outcome.reason && outcome.reason.stack ? outcome.reason.stack : outcome.reason}`);
    }
  });
  console.log(`${names.length - failed} of ${names.length} JavaScript scenarios passed`);
  await client.stop();
  await worker.stop();
  await versionedWorker.stop();
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
