import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";
import { createUser } from "@nats-io/nkeys";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compareVersions, repoRoot, suiteFor } from "../src/binary.js";
import { operatorMode } from "../src/operator.js";
import { patternNames } from "../src/patterns.js";
import { freePort, type NatsServer, startServer } from "../src/server.js";
import { olderServer, sleep } from "../src/testing.js";
import { makeTestCerts, type TestCerts } from "../src/tls.js";

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: NodeJS.ProcessEnv = {}, command = process.execPath): Promise<Run> {
  const argv = command === process.execPath ? ["--import", "tsx", join(repoRoot, "packages/harness/src/run-pattern.ts"), ...args] : args;
  const merged: NodeJS.ProcessEnv = { ...process.env, LOG_FORMAT: "json", ...env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete merged[k];
  return new Promise((resolve) => {
    const child = spawn(command, argv, { cwd: repoRoot, env: merged, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

// What does not depend on the server's version (arguments, signals, help, the files a starter gets)
// runs once, on the newest; the matrix runs this file on every version. How a server refuses a
// credential or a TLS client is the server's, and is tested on each.
const newestOnly = olderServer() ? it.skip : it;

const oneLine = (s: string) => s.trim().split("\n");
const noStack = (s: string) => !/^\s+at /m.test(s);

// The demos below run against a server that wants a password, given in NATS_URL as user info (as the
// NATS CLI takes it): every pattern connects with it, and no output may show it.
const password = `pw${randomBytes(9).toString("hex")}`;
let server: NatsServer;
let url: string;
beforeAll(async () => {
  server = await startServer({ config: `authorization { user: demo, password: ${password} }` });
  url = server.url.replace("nats://", `nats://demo:${password}@`);
});
afterAll(async () => {
  await server?.stop();
});

describe("pnpm run pattern", () => {
  // A first run fetches only the nats-server it starts: the suite it asks for (the download itself needs
  // the network, and is not tested here).
  newestOnly.each([
    ["2.9.10", "bookworm"],
    ["2.9", "bookworm"],
    ["2.10.27", "trixie"],
    ["2.15.1", "sid"],
    ["2.90.0", "sid"],
    [undefined, "sid"],
  ])("picks, for nats-server %s, the one Debian suite %s that packages it", (version, suite) => {
    expect(suiteFor(version)).toBe(suite);
  });

  newestOnly("lists the patterns with what each does, and exits 0, when no pattern is named (listing is not an error)", async () => {
    const r = await run([]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/^usage: pnpm run pattern <name>/);
    for (const name of patternNames()) expect(r.stdout).toMatch(new RegExp(`^  ${name} +\\S`, "m"));
  });

  newestOnly("rejects an unknown pattern with one line naming the choices", async () => {
    const r = await run(["no-such-pattern"]);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toEqual([expect.stringMatching(/^error: unknown pattern "no-such-pattern" — choose one of: .*work-queue/)]);
  });

  newestOnly("reports an unreachable NATS_URL in one line, without a stack trace", async () => {
    const port = await freePort();
    const r = await run(["work-queue"], { NATS_URL: `nats://127.0.0.1:${port}` });
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toEqual([expect.stringMatching(new RegExp(`^error: no nats-server at nats://127.0.0.1:${port} .*NATS_URL`))]);
    expect(noStack(r.stderr + r.stdout)).toBe(true);
  });

  newestOnly("refuses --cluster together with NATS_URL in one line", async () => {
    const r = await run(["work-queue", "--cluster"], { NATS_URL: url });
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toEqual([expect.stringMatching(/^error: --cluster starts its own 3-node cluster: unset NATS_URL/)]);
  });

  newestOnly("rejects a bad option value in one line", async () => {
    const r = await run(["work-queue", "--jobs", "many"], { NATS_URL: url });
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toEqual(['error: --jobs must be a positive integer, got "many"']);
  });

  // Without NATS_URL the runner starts a server while the demo checks its options: a bad option is the
  // demo's one line, and the server is stopped without a word.
  newestOnly.each([
    [["--jobs", "many"], 'error: --jobs must be a positive integer, got "many"'],
    [["--jobs", "-5"], 'error: --jobs takes a value: write one that starts with "-" as --jobs=<value> (see --help)'],
    [["--jobs"], "error: --jobs needs a value (see --help)"],
    [["--jobs=-5"], 'error: --jobs must be a positive integer, got "-5"'],
    [["--no-such"], "error: unknown option --no-such (see --help)"],
  ])("rejects work-queue %j in one line, announcing no nats-server", async (args, line) => {
    const r = await run(["work-queue", ...args], { NATS_URL: undefined });
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toEqual([line]);
  });

  it("runs work-queue against NATS_URL (with user:password in it) and accounts for every job: lost=0, none both processed and dead-lettered", async () => {
    const r = await run(["work-queue", "--jobs", "60", "--workers", "2"], { NATS_URL: url });
    expect(r.stderr).toBe("");
    expect(r.stdout).not.toContain(password);
    expect(r.code).toBe(0);
    const summary = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .find((l) => String(l.msg).startsWith("summary"));
    expect(summary).toMatchObject({ published: 61, lost: 0, in_both: 0, left_in_queue: 0, redelivered: expect.any(Number) });
    expect(summary.processed + summary.dead_lettered).toBe(61);
    expect(summary.dead_lettered).toBeGreaterThanOrEqual(2); // a poison job and a malformed one
  });

  for (const path of ["NATS_URL", "its own nats-server, through pnpm"] as const)
    newestOnly(`stops work-queue on Ctrl-C with exit 130, reporting the jobs left in the queue as left, not lost (${path})`, async () => {
      const own = path !== "NATS_URL";
      const env: NodeJS.ProcessEnv = { ...process.env, LOG_FORMAT: "json", NATS_URL: url };
      if (own) delete env.NATS_URL;
      const [command, argv] = own
        ? ["pnpm", ["run", "--silent", "pattern", "work-queue", "--jobs", "20000"]]
        : [process.execPath, ["--import", "tsx", join(repoRoot, "packages/harness/src/run-pattern.ts"), "work-queue", "--jobs", "20000"]];
      const child = spawn(command, argv, {
        cwd: repoRoot,
        env,
        stdio: ["ignore", "pipe", "pipe"],
        detached: true, // its own process group, as in a terminal: Ctrl-C reaches every process in it
      });
      let stdout = "";
      child.stdout.on("data", (d) => (stdout += d));
      // The status a shell reports: the exit code, or 128 + the signal (pnpm re-raises the SIGINT).
      const exited = new Promise<number | null>((resolve) =>
        child.once("exit", (code, signal) => resolve(code ?? (signal === "SIGINT" ? 130 : null))),
      );
      const timer = setTimeout(() => process.kill(-child.pid!, "SIGKILL"), 90_000);
      for (let i = 0; i < 600 && !/"msg":"progress"/.test(stdout); i++) await sleep(100);
      process.kill(-child.pid!, "SIGINT");
      const code = await exited;
      clearTimeout(timer);
      const summary = JSON.parse(stdout.trim().split("\n").at(-1)!);
      expect(code).toBe(130);
      expect(summary).toMatchObject({ published: 20_200, lost: 0, in_both: 0 });
      expect(summary.left_in_queue).toBeGreaterThan(0);
      expect(summary.processed + summary.dead_lettered + summary.left_in_queue).toBe(20_200);
      expect(summary.msg).toMatch(/stopped by Ctrl-C: \d+ jobs left in the queue/);
    });

  // SIGTERM is a clean stop for every demo (kit/cli.ts: exit 0); SIGHUP ends it, 128 + 1.
  for (const [signal, status] of [
    ["SIGTERM", 0],
    ["SIGHUP", 129],
  ] as const)
    newestOnly(
      `passes ${signal} sent to the runner alone on to the demo, exits as it does (${status}) and stops its nats-server`,
      async () => {
        const env: NodeJS.ProcessEnv = { ...process.env, LOG_FORMAT: "json" };
        delete env.NATS_URL;
        const runner = join(repoRoot, "packages/harness/src/run-pattern.ts");
        const child = spawn(process.execPath, ["--import", "tsx", runner, "work-queue", "--jobs", "20000"], {
          cwd: repoRoot,
          env,
          stdio: ["ignore", "pipe", "pipe"],
          detached: true,
        });
        let out = "";
        child.stdout.on("data", (d) => (out += d));
        child.stderr.on("data", (d) => (out += d));
        const exited = new Promise<number | null>((resolve) =>
          child.once("exit", (code, sig) => resolve(code ?? (sig ? 128 + constants.signals[sig] : null))),
        );
        const timer = setTimeout(() => process.kill(-child.pid!, "SIGKILL"), 90_000);
        for (let i = 0; i < 600 && !/"msg":"progress"/.test(out); i++) await sleep(100);
        const started = /started nats-server \S+ on (nats:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1];
        expect(started, out).toBeDefined();
        child.kill(signal); // the runner alone, not its process group
        const code = await exited;
        clearTimeout(timer);
        expect(code).toBe(status);
        const left = await connect({ servers: started!, reconnect: false, timeout: 2_000 }).then(
          async (c) => {
            await c.close();
            return "still serving";
          },
          () => "stopped",
        );
        expect(left).toBe("stopped");
      },
    );

  newestOnly("starts its own nats-server when NATS_URL is unset (through pnpm, as the README says)", async () => {
    const r = await run(["run", "--silent", "pattern", "work-queue", "--jobs", "20"], { NATS_URL: undefined }, "pnpm");
    expect(r.stderr).toMatch(/started nats-server \d+\.\d+\.\d+ on nats:\/\/127\.0\.0\.1:\d+/);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/summary: processed=\d+ dead_lettered=\d+ redelivered=\d+ left=0 lost=0 in_both=0/);
  });

  it("refuses scheduled-jobs in one line on a server before 2.12, and runs it on one after", async () => {
    const r = await run(["scheduled-jobs", "--delay-ms", "1000", "--recurring-runs", "2"], { NATS_URL: url });
    expect(r.stdout + r.stderr).not.toContain(password);
    if (compareVersions(server.version, "2.12.0") < 0) {
      expect(r.code).toBe(1);
      expect(oneLine(r.stderr)).toEqual([
        `error: scheduled jobs need nats-server >= 2.12 (message schedules; @every, cron and time zones: 2.14); this server is ${server.version}`,
      ]);
    } else {
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout.trim().split("\n").at(-1)!)).toMatchObject({
        once: 1,
        early: 0,
        debounced_runs: 1,
        cancelled_runs: 0,
        lost: 0,
      });
    }
  });

  for (const name of ["fanout", "dedup-publish", "ordered-replay", "priority-queue", "exactly-once", "event-sourcing"]) {
    it(`runs ${name} against NATS_URL (with user:password in it) and ends with a summary line that shows the guarantee held`, async () => {
      const r = await run([name], { NATS_URL: url });
      expect(r.stderr).toBe("");
      expect(r.stdout).not.toContain(password);
      expect(r.code).toBe(0);
      const lines = r.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l));
      const summary = lines.at(-1);
      expect(summary.msg).toMatch(/^summary: /);
      expect(summary.msg).toMatch(/lost=0/);
      if (name === "priority-queue") {
        // Native priority groups are version-gated: the demo must say which technique it used.
        const old = compareVersions(server.version, "2.11.0") < 0;
        const warned = lines.some((l) =>
          String(l.msg).includes(
            `priority groups need nats-server >= 2.11 (prioritized >= 2.12); this server is ${server.version}: using subjects per level`,
          ),
        );
        expect(warned).toBe(old);
        expect(summary.native).toBe(
          old ? "unavailable (subjects per level)" : compareVersions(server.version, "2.12.0") < 0 ? "overflow" : "prioritized+overflow",
        );
      }
    });
  }

  it("runs work-queue --cluster on a local 3-node cluster with R3 streams", async () => {
    const r = await run(["work-queue", "--cluster", "--jobs", "40"], { NATS_URL: undefined });
    expect(r.code, `${r.stderr}\n${r.stdout.slice(-3000)}`).toBe(0);
    expect(r.stderr).toMatch(
      /^started a 3-node nats-server cluster \d+\.\d+\.\d+ on nats:\/\/127\.0\.0\.1:\d+,nats:\/\/127\.0\.0\.1:\d+,nats:\/\/127\.0\.0\.1:\d+ /,
    );
    expect(r.code).toBe(0);
    const lines = r.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.find((l) => String(l.msg).startsWith("connected"))).toMatchObject({ replicas: 3 });
    expect(lines.at(-1)).toMatchObject({ lost: 0, in_both: 0, left_in_queue: 0 });
  });

  newestOnly("explains the runner with --help: every pattern, --cluster, the server and credential env vars", async () => {
    const r = await run(["--help"], { NATS_URL: undefined });
    expect(r.code).toBe(0);
    for (const text of ["work-queue", "priority-queue", "--cluster", "NATS_URL", "NATS_TOKEN", "NATS_SERVER_VERSION", "<name> --help"])
      expect(r.stdout).toContain(text);
  });

  newestOnly("prints a pattern's options with --help, without starting a server", async () => {
    const r = await run(["priority-queue", "--help"], { NATS_URL: undefined });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/usage: pnpm run pattern priority-queue/);
    expect(r.stderr).not.toMatch(/started nats-server/);
  });

  // Secured servers: every credential convention of the NATS CLI works, a refusal is one line that says
  // what to set, and no output of any run, allowed or refused, contains a secret.
  const nkey = createUser();
  const seed = new TextDecoder().decode(nkey.getSeed());
  let certs: TestCerts;
  let seedFile: string;
  beforeAll(() => {
    certs = makeTestCerts();
    seedFile = join(certs.dir, "user.nk");
    writeFileSync(seedFile, `${seed}\n`);
  });
  afterAll(() => rmSync(certs.dir, { recursive: true, force: true }));
  const withInfo = (url: string, info: string) => url.replace("nats://", `nats://${info}@`);
  const tls = (url: string) => url.replace("nats://", "tls://");
  const userPass = "authorization { user: alice, password: s3cret }";
  const tokenAuth = "authorization { token: t0ken-abc }";
  const refusedLine =
    /^error: nats-server at nats:\/\/127\.0\.0\.1:\d+ refused the connection .*set NATS_USER\/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or NATS_NKEY/;
  type Env = Record<string, string | undefined>;
  const secured: {
    how: string;
    secrets: () => string[];
    config: () => string;
    allow: (url: string) => Env;
    deny: (url: string) => Env;
    refused: RegExp;
  }[] = [
    {
      how: "user/password (NATS_USER, NATS_PASSWORD)",
      secrets: () => ["s3cret"],
      config: () => userPass,
      allow: (url) => ({ NATS_URL: url, NATS_USER: "alice", NATS_PASSWORD: "s3cret" }),
      deny: (url) => ({ NATS_URL: url }),
      refused: refusedLine,
    },
    {
      how: "user/password in NATS_URL",
      secrets: () => ["s3cret", "wr0ng-pa55"],
      config: () => userPass,
      allow: (url) => ({ NATS_URL: withInfo(url, "alice:s3cret") }),
      deny: (url) => ({ NATS_URL: withInfo(url, "alice:wr0ng-pa55") }),
      refused: refusedLine,
    },
    {
      how: "token (NATS_TOKEN)",
      secrets: () => ["t0ken-abc"],
      config: () => tokenAuth,
      allow: (url) => ({ NATS_URL: url, NATS_TOKEN: "t0ken-abc" }),
      deny: (url) => ({ NATS_URL: url }),
      refused: refusedLine,
    },
    {
      how: "token in NATS_URL",
      secrets: () => ["t0ken-abc", "wr0ng-t0ken"],
      config: () => tokenAuth,
      allow: (url) => ({ NATS_URL: withInfo(url, "t0ken-abc") }),
      deny: (url) => ({ NATS_URL: withInfo(url, "wr0ng-t0ken") }),
      refused: refusedLine,
    },
    {
      how: "nkey (NATS_NKEY, a seed file)",
      secrets: () => [seed],
      config: () => `authorization { users: [ { nkey: ${nkey.getPublicKey()} } ] }`,
      allow: (url) => ({ NATS_URL: url, NATS_NKEY: seedFile }),
      deny: (url) => ({ NATS_URL: url }),
      refused: refusedLine,
    },
    {
      how: "TLS with client certificates (tls://, NATS_CA, NATS_CERT, NATS_KEY)",
      secrets: () => [readFileSync(certs.clientKey, "utf8").split("\n")[1]!],
      config: () => `tls { cert_file: "${certs.serverCert}", key_file: "${certs.serverKey}", ca_file: "${certs.ca}", verify: true }`,
      allow: (url) => ({ NATS_URL: tls(url), NATS_CA: certs.ca, NATS_CERT: certs.clientCert, NATS_KEY: certs.clientKey }),
      deny: (url) => ({ NATS_URL: tls(url), NATS_CA: certs.ca }), // no client certificate
      refused: /^error: TLS with nats-server at tls:\/\/127\.0\.0\.1:\d+ failed .*set NATS_CA .*NATS_CERT\/NATS_KEY/,
    },
    {
      how: "TLS whose CA the client is not given",
      secrets: () => [],
      config: () => `tls { cert_file: "${certs.serverCert}", key_file: "${certs.serverKey}" }`,
      allow: (url) => ({ NATS_URL: tls(url), NATS_CA: certs.ca }),
      deny: (url) => ({ NATS_URL: tls(url) }),
      refused: /^error: TLS with nats-server at tls:\/\/127\.0\.0\.1:\d+ failed \(.+\) — set NATS_CA/,
    },
  ];
  for (const { how, secrets, config, allow, deny, refused } of secured) {
    it(`connects with ${how}, refuses in one line without it, and never prints the secret`, async () => {
      const locked = await startServer({ config: config() });
      try {
        const ok = await run(["fanout", "--orders", "5"], allow(locked.url));
        expect(ok.code, ok.stderr).toBe(0);
        expect(JSON.parse(ok.stdout.trim().split("\n").at(-1)!)).toMatchObject({ lost: 0 });
        const denied = await run(["fanout", "--orders", "5"], { NATS_USER: undefined, NATS_TOKEN: undefined, ...deny(locked.url) });
        expect(denied.code).not.toBe(0);
        expect(oneLine(denied.stderr)).toEqual([expect.stringMatching(refused)]);
        expect(noStack(denied.stderr)).toBe(true);
        for (const secret of secrets()) {
          for (const out of [ok.stdout, ok.stderr, denied.stdout, denied.stderr]) expect(out).not.toContain(secret);
        }
      } finally {
        await locked.stop();
      }
    });
  }

  it("connects with a creds file (NATS_CREDS) in operator mode, and says in one line when the account has no JetStream", async () => {
    const op = await operatorMode(certs.dir);
    const secured = await startServer({ config: op.config });
    try {
      const ok = await run(["fanout", "--orders", "5"], { NATS_URL: secured.url, NATS_CREDS: op.creds });
      expect(ok.code, ok.stderr).toBe(0);
      expect(JSON.parse(ok.stdout.trim().split("\n").at(-1)!)).toMatchObject({ lost: 0 });
      const nojs = await run(["fanout", "--orders", "5"], { NATS_URL: secured.url, NATS_CREDS: op.noJetStreamCreds });
      expect(nojs.code).toBe(1);
      expect(oneLine(nojs.stderr)).toEqual([expect.stringMatching(/^error: JetStream is not enabled for this account — enable it/)]);
      const denied = await run(["fanout", "--orders", "5"], { NATS_URL: secured.url });
      expect(oneLine(denied.stderr)).toEqual([expect.stringMatching(refusedLine)]);
      for (const seed of op.seeds)
        for (const out of [ok, nojs, denied].flatMap((r) => [r.stdout, r.stderr])) expect(out).not.toContain(seed);
    } finally {
      await secured.stop();
    }
  });

  it("refuses a demo run as one role of nats/roles.conf in one line naming the subject that role may not use", async () => {
    const roles = await startServer({ roles: true });
    try {
      const admin = roles.login("admin");
      // The admin sets up streams and consumers, but may not publish the events (the producer's job).
      const asAdmin = await run(["fanout", "--orders", "5"], {
        NATS_URL: withInfo(roles.url, `${admin.user}:${admin.pass}`),
        NATS_INBOX_PREFIX: admin.inboxPrefix,
      });
      expect(asAdmin.code).toBe(1);
      expect(oneLine(asAdmin.stderr)).toEqual([
        expect.stringMatching(
          /^error: fanout failed: 15 event\(s\) .* not permitted: this user may not publish to limits\.orders\.created — /,
        ),
      ]);
      const producer = roles.login("fanout-producer");
      const asProducer = await run(["fanout", "--orders", "5"], {
        NATS_URL: roles.url,
        NATS_USER: producer.user,
        NATS_PASSWORD: producer.pass,
        NATS_INBOX_PREFIX: producer.inboxPrefix,
      });
      expect(asProducer.code).toBe(1);
      expect(oneLine(asProducer.stderr)).toEqual([
        expect.stringMatching(/^error: not permitted: this user may not publish to \$JS\.API\.INFO — /),
      ]);
      // Without its inbox prefix a role cannot read its own replies: the line says what to set.
      const noPrefix = await run(["fanout", "--orders", "5"], {
        NATS_URL: roles.url,
        NATS_USER: producer.user,
        NATS_PASSWORD: producer.pass,
      });
      expect(noPrefix.code).toBe(1);
      expect(oneLine(noPrefix.stderr)).toEqual([
        expect.stringMatching(
          /^error: not permitted: this user may not subscribe to _INBOX\.\S+, where its replies would come — set NATS_INBOX_PREFIX/,
        ),
      ]);
      for (const out of [asAdmin.stdout, asAdmin.stderr, asProducer.stdout, asProducer.stderr]) {
        expect(out).not.toContain(admin.pass);
        expect(out).not.toContain(producer.pass);
      }
    } finally {
      await roles.stop();
    }
  });

  it("says in one line that JetStream is not enabled for an account without it", async () => {
    const nojs = await startServer({ config: "accounts { NOJS: { users: [ { user: nojs, password: nojs } ] } }" });
    try {
      const r = await run(["fanout", "--orders", "5"], { NATS_URL: withInfo(nojs.url, "nojs:nojs") });
      expect(r.code).toBe(1);
      expect(oneLine(r.stderr)).toEqual([expect.stringMatching(/^error: JetStream is not enabled for this account — enable it/)]);
    } finally {
      await nojs.stop();
    }
  });
});

describe("pnpm run new", () => {
  const runNew = (args: string[]) => run(["--import", "tsx", join(repoRoot, "packages/harness/src/new-starter.ts"), ...args], {}, "node");
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "jsp-new-test-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  newestOnly(
    "writes a standalone project: the pattern's src with the kit inlined, real versions (no workspace links), tsconfig, README, a test",
    async () => {
      const r = await runNew(["work-queue", join(dir, "wq")]);
      expect(r.code, r.stderr).toBe(0);
      const pkg = JSON.parse(readFileSync(join(dir, "wq/package.json"), "utf8"));
      expect(JSON.stringify(pkg)).not.toMatch(/workspace:|@repo\//);
      expect(pkg.dependencies["@nats-io/jetstream"]).toMatch(/^\^\d+\.\d+\.\d+$/);
      expect(pkg.scripts).toMatchObject({
        build: "tsc -p tsconfig.build.json",
        start: "exec node dist/service.js", // compiled, and npm's own child: it gets npm's SIGTERM
        dev: "tsx src/service.ts",
        demo: "tsx src/main.ts",
        dlq: "tsx src/ops/dlq.ts",
        test: expect.stringContaining("vitest run"),
      });
      for (const f of [
        "src/main.ts",
        "src/worker.ts",
        "src/status/tracked.ts",
        "src/ops/dlq.ts",
        "src/kit/index.ts",
        "src/kit/connect.ts",
        "src/kit/publisher.ts",
        "tsconfig.json",
        "README.md",
        "test/starter.test.ts",
      ])
        expect(existsSync(join(dir, "wq", f)), f).toBe(true);
      // Standalone: the kit is inlined and nothing imports the workspace package any more.
      const sources = ["src", "src/status", "src/ops", "src/kit"].flatMap((d) =>
        readdirSync(join(dir, "wq", d))
          .filter((f) => f.endsWith(".ts"))
          .map((f) => join(d, f)),
      );
      for (const f of sources) expect(readFileSync(join(dir, "wq", f), "utf8"), f).not.toMatch(/from "@repo\//);
      expect(readFileSync(join(dir, "wq/src/main.ts"), "utf8")).toMatch(/from "\.\/kit\/index\.js"/);
      expect(readFileSync(join(dir, "wq/src/ops/dlq.ts"), "utf8")).toMatch(/from "\.\.\/kit\/index\.js"/);
    },
  );

  // A starter is read without the repo beside it: its README may name only what the starter has.
  newestOnly.each(patternNames())("writes %s's README for the starter alone: no repo command, path or link it lacks", async (name) => {
    const to = join(dir, `alone-${name}`);
    const r = await runNew([name, to]);
    expect(r.code, r.stderr).toBe(0);
    // Its README, and those of src's folders (work-queue's status and operator tools).
    const docs = ["README.md", ...readdirSync(join(to, "src")).map((d) => join("src", d, "README.md"))].filter((f) =>
      existsSync(join(to, f)),
    );
    const readme = docs
      .map((f) => readFileSync(join(to, f), "utf8"))
      .join("\n")
      .replace(/^<!--.*-->$/m, "");
    expect(readme).not.toMatch(/(?<!jetstream-patterns' `)\bpnpm\b/); // its scripts run with npm
    expect(readme).not.toMatch(/packages\/|patterns\/|@repo\//);
    const scripts = Object.keys(JSON.parse(readFileSync(join(to, "package.json"), "utf8")).scripts);
    for (const [, script] of readme.matchAll(/`npm run ([\w-]+)/g)) expect(scripts, `npm run ${script}`).toContain(script);
    for (const [, link] of readme.matchAll(/\]\(([^)#\s]+)[^)]*\)/g))
      if (!/^https?:/.test(link!)) expect(existsSync(join(to, link!)), `link ${link}`).toBe(true);
    // Files it names as its own: src/, test/, nats/ and .ci/ paths are the starter's, or not named.
    for (const [, path] of readme.matchAll(/(?<!jetstream-patterns' )`((?:src|test|nats|\.ci)\/[\w./-]*\w)`/g))
      expect(existsSync(join(to, path!)), `names ${path}`).toBe(true);
    expect(readme).not.toMatch(/repo root/);
  });

  newestOnly("writes a starter's test that checks NATS_URL before any of its tests", async () => {
    const text = readFileSync(join(dir, "wq/test/starter.test.ts"), "utf8");
    // The check comes before any test runs, so the service test cannot fail first with "expected false to be true".
    const guard = text.indexOf("if (!process.env.NATS_URL)");
    expect(guard).toBeGreaterThan(-1);
    expect(guard).toBeLessThan(text.indexOf("it("));
  });

  newestOnly("refuses an unknown pattern and a non-empty directory in one line each, writing nothing", async () => {
    const unknown = await runNew(["nope", join(dir, "x")]);
    expect(unknown.code).toBe(2);
    expect(oneLine(unknown.stderr)).toEqual([expect.stringMatching(/^error: unknown pattern "nope" — choose one of: .*work-queue/)]);
    expect(existsSync(join(dir, "x"))).toBe(false);
    mkdirSync(join(dir, "full"));
    writeFileSync(join(dir, "full/keep.txt"), "mine");
    const full = await runNew(["fanout", join(dir, "full")]);
    expect(full.code).toBe(2);
    expect(oneLine(full.stderr)).toEqual([
      expect.stringMatching(/^error: .*full exists and is not empty — choose a new or empty directory \(nothing was written\)$/),
    ]);
    expect(readdirSync(join(dir, "full"))).toEqual(["keep.txt"]);
  });
});
