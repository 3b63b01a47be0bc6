// Worker processes for fault schedules, started ahead: Node and tsx take about a second to start a
// process, longer than most steps of a schedule. A warm process has loaded its code and waits for one
// line on stdin (what to run, against which server); taking one starts another in the background.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";

export type Line = Record<string, unknown>;

export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  /** Resolves when the process reported `{"ready": ...}` after its start line. */
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  send(line: Line): void;
  signal(sig: NodeJS.Signals): void;
  alive(): boolean;
}

const host = join(import.meta.dirname, "host.ts");

interface Warm {
  child: ChildProcess;
  warm: Promise<void>;
  lines: Line[];
  onLine?: (l: Line) => void;
}

function spawnWarm(): Warm {
  const child = spawn(process.execPath, ["--import", "tsx", host], { stdio: ["pipe", "pipe", "inherit"] });
  const w: Warm = { child, lines: [], warm: Promise.resolve() };
  child.stdin!.on("error", () => {}); // a line to a process that just died: its exit is what counts
  w.warm = new Promise((resolve, reject) => {
    child.once("exit", (code, sig) => reject(new Error(`a warm worker process exited (${code ?? sig}) before it was used`)));
    createInterface({ input: child.stdout! }).on("line", (text) => {
      let l: Line;
      try {
        l = JSON.parse(text) as Line;
      } catch {
        l = { text }; // not ours (a library's print): kept as text, read by no model
      }
      if (l.warm) return resolve();
      if (w.onLine) w.onLine(l);
      else w.lines.push(l);
    });
  });
  w.warm.catch(() => {}); // reported when taken
  return w;
}

export class Pool {
  private spare: Warm[] = [];
  private all = new Set<ChildProcess>();
  constructor(size = 2) {
    for (let i = 0; i < size; i++) this.spare.push(this.track(spawnWarm()));
  }
  private track(w: Warm) {
    this.all.add(w.child);
    w.child.once("exit", () => this.all.delete(w.child));
    return w;
  }
  /** A warm process started as `role` with `options`; every line it prints after that goes to onLine. */
  async start(name: string, role: string, options: Line, onLine: (l: Line) => void): Promise<Proc> {
    const w = this.spare.shift() ?? this.track(spawnWarm());
    this.spare.push(this.track(spawnWarm()));
    await w.warm;
    let ready: () => void = () => {};
    const readyP = new Promise<void>((r) => (ready = r));
    w.onLine = (l) => (l.ready ? ready() : onLine(l));
    for (const l of w.lines.splice(0)) w.onLine(l);
    const exited = new Promise<void>((r) => {
      if (w.child.exitCode !== null || w.child.signalCode !== null) r();
      else w.child.once("exit", () => r());
    });
    const proc: Proc = {
      name,
      child: w.child,
      ready: Promise.race([readyP, exited.then(() => Promise.reject(new Error(`worker ${name} exited before it was ready`)))]),
      exited,
      send: (line) => w.child.stdin!.write(`${JSON.stringify(line)}\n`),
      signal: (sig) => {
        if (proc.alive()) w.child.kill(sig);
      },
      alive: () => w.child.exitCode === null && w.child.signalCode === null,
    };
    proc.send({ name, role, ...options });
    return proc;
  }
  /** Ends every process, warm or in use. */
  async close(): Promise<void> {
    const ends = [...this.all].map(
      (c) => new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once("exit", () => r()))),
    );
    for (const c of this.all) c.kill("SIGKILL");
    await Promise.all(ends);
  }
}
