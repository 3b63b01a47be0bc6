// docker-compose.yml checked as far as it can be without Docker: it parses, the files it mounts and
// reads exist, its ports are loopback-only and the ones the README gives, and its servers' commands,
// run here with the local nats-server (paths and ports mapped), start and serve JetStream: the
// composed servers are the tested ones, Docker aside.
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { placed } from "@repo/kit";
import { afterAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { findServerBinary, repoRoot } from "../src/binary.js";
import { metaReady, untilWhole } from "../src/cluster.js";
import { freePort, loginWith, reservePorts, rolePasswords, serverProcess } from "../src/server.js";

interface Service {
  image: string;
  command: string[];
  ports?: (string | number)[];
  volumes?: string[];
  env_file?: (string | { path: string; required?: boolean })[];
  profiles?: string[];
  healthcheck?: { test: string[] };
}
const compose = parse(readFileSync(join(repoRoot, "docker-compose.yml"), "utf8"), { merge: true }) as {
  services: Record<string, Service>;
};
const services = Object.entries(compose.services);
const readme = readFileSync(join(repoRoot, "nats/README.md"), "utf8"); // where the compose services are described
const flag = (s: Service, name: string) => s.command[s.command.indexOf(name) + 1];
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("docker-compose.yml", () => {
  it("has the services the README names, each reading a config file of nats/ that exists", () => {
    expect(Object.keys(compose.services).sort()).toEqual(["n1", "n2", "n3", "nats", "nats-secure"]);
    for (const [name, s] of services) {
      expect(s.command[0], name).toBe("-c");
      expect(s.command[1], name).toMatch(/^\/etc\/nats\/[a-z]+\.conf$/);
      expect(existsSync(join(repoRoot, "nats", s.command[1]!.slice("/etc/nats/".length))), name).toBe(true);
      expect(s.volumes, name).toContain("./nats:/etc/nats:ro");
      for (const v of s.volumes ?? []) if (v.startsWith("./")) expect(existsSync(join(repoRoot, v.split(":")[0]!)), v).toBe(true);
      expect(readme, `README names server ${flag(s, "--name")}`).toContain(flag(s, "--name"));
    }
  });

  it("publishes only loopback ports, the ones the README gives", () => {
    const published = services.flatMap(([, s]) => (s.ports ?? []).map(String));
    expect(published.length).toBeGreaterThan(0);
    for (const p of published) {
      expect(p).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
      expect(readme, `README gives port ${p.split(":")[1]}`).toContain(`127.0.0.1:${p.split(":")[1]}`);
    }
  });

  it("keeps the role passwords out of git: the env file it reads is ignored", () => {
    const envFiles = services.flatMap(([, s]) => (s.env_file ?? []).map((e) => (typeof e === "string" ? e : e.path)));
    expect(envFiles).toEqual(["nats/roles.env"]);
    expect(readFileSync(join(repoRoot, ".gitignore"), "utf8").split("\n")).toContain("nats/roles.env");
  });

  /**
   * Runs a service's command with the local nats-server: /etc/nats is nats/, /data a temp dir, ports
   * free, the cluster's host names (n1:6222, ...) loopback ports, and no --client_advertise.
   */
  async function runService(
    name: string,
    env?: Record<string, string>,
    routes: Record<string, number> = {},
    ports?: { port: number; http: number },
  ) {
    const s = compose.services[name]!;
    const dir = mkdtempSync(join(tmpdir(), `jsp-compose-${name}-`));
    dirs.push(dir);
    const { port, http } = ports ?? { port: await freePort(), http: await freePort() };
    const at = s.command.indexOf("--client_advertise");
    const command = at < 0 ? s.command : [...s.command.slice(0, at), ...s.command.slice(at + 2)];
    const flags = command
      .slice(2)
      .map((a) => (a === "/data" ? join(dir, "data") : a === "8222" ? String(http) : a))
      .map((a) =>
        a.replace("0.0.0.0:6222", `127.0.0.1:${routes[name]}`).replace(/(n\d):6222/g, (_, n: string) => `127.0.0.1:${routes[n]}`),
      );
    const proc = serverProcess(findServerBinary(), join(dir, "conf"), port, {
      base: s.command[1]!.slice("/etc/nats/".length),
      extra: "",
      flags,
      env,
    });
    await proc.start();
    return { url: `nats://127.0.0.1:${port}`, http, proc };
  }

  it('runs the "nats" service\'s command: JetStream on, its name, healthy', async () => {
    const { url, http, proc } = await runService("nats");
    try {
      const nc = await connect({ servers: url });
      expect(nc.info?.server_name).toBe("jsp-local");
      expect((await (await jetstreamManager(nc)).getAccountInfo()).streams).toBe(0);
      await nc.close();
      expect((await fetch(`http://127.0.0.1:${http}/healthz?js-enabled-only=true`)).ok).toBe(true);
    } finally {
      await proc.halt("SIGTERM");
    }
  });

  it('runs the "nats-secure" service\'s command: the roles of nats/roles.conf, no anonymous access', async () => {
    const passwords = rolePasswords();
    const { url, proc } = await runService("nats-secure", passwords);
    try {
      const nc = await connect(loginWith(url, passwords)("admin"));
      expect(nc.info?.server_name).toBe("jsp-secure");
      await nc.close();
      await expect(connect({ servers: url })).rejects.toThrow(/Authorization Violation/);
    } finally {
      await proc.halt("SIGTERM");
    }
  });

  it("runs the cluster profile's three commands: they form one JetStream cluster", async () => {
    const names = ["n1", "n2", "n3"];
    // As the harness's own clusters: up to three fresh starts until the meta group takes in every node
    // (2.10.27 sometimes forms it of two nodes for good: see untilWhole). Each start's nine ports are
    // chosen at once (ports chosen one by one can repeat: a node's HTTP port on another's route).
    const nodes = await untilWhole(async () => {
      const reserved = await reservePorts(3 * names.length);
      const free = [...reserved.ports];
      const routes = Object.fromEntries(names.map((n) => [n, free.pop()!] as const));
      const own = names.map(() => ({ port: free.pop()!, http: free.pop()! }));
      await reserved.release();
      const started = await Promise.all(names.map((n, i) => runService(n, undefined, routes, own[i])));
      try {
        const up = started.map((n, i) => ({ name: names[i]!, http: n.http, running: n.proc.running }));
        await metaReady(up, 20_000, true);
        return started;
      } catch (err) {
        await Promise.all(started.map((n) => n.proc.halt("SIGTERM")));
        throw err;
      }
    });
    try {
      const nc = await connect({ servers: nodes.map((n) => n.url) });
      const jsm = await jetstreamManager(nc);
      await placed(() => jsm.streams.add({ name: "R3", subjects: ["r3"], num_replicas: 3 }));
      expect((await jsm.streams.info("R3")).cluster?.replicas?.length).toBe(2);
      await nc.close();
    } finally {
      await Promise.all(nodes.map((n) => n.proc.halt("SIGTERM")));
    }
  });
});
