// A TCP link on loopback that a test can cut and heal: a proxy from its own port to a target port.
// A cut behaves like a network partition, not like a crash: open connections stay open but nothing
// moves (both sides stop being read, so bytes wait in the kernel as TCP would retransmit them), and a
// new connection is accepted but not joined to the target. Healing lets everything flow again; a side
// that gave up meanwhile (a ping timeout) closes its connection, and the close is passed on.
import { createConnection, createServer, type Socket } from "node:net";

export interface Link {
  /** The port to connect to instead of the target's. */
  port: number;
  cut(): void;
  /** Holds only what the target sends (its sockets are not read) while clients' bytes still flow; heal() lets it through. */
  holdReplies(): void;
  heal(): void;
  isCut(): boolean;
  close(): Promise<void>;
}

export async function tcpLink(targetPort: number): Promise<Link> {
  let cut = false;
  const open = new Set<Socket>();
  const held: Socket[] = [];
  const upstreams = new Set<Socket>();

  const join = (client: Socket) => {
    const upstream = createConnection({ host: "127.0.0.1", port: targetPort });
    upstreams.add(upstream);
    upstream.on("close", () => upstreams.delete(upstream));
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      open.add(from);
      from.on("data", (d) => to.write(d));
      from.on("error", () => to.destroy());
      from.on("close", () => {
        open.delete(from);
        to.destroy();
      });
    }
  };
  const server = createServer((client) => {
    client.setNoDelay(true);
    if (!cut) return join(client);
    client.pause(); // accepted, but held: like a SYN with no answer yet
    held.push(client);
    client.on("error", () => client.destroy());
  });
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;

  return {
    port,
    cut() {
      cut = true;
      for (const s of open) s.pause();
    },
    holdReplies() {
      for (const s of upstreams) s.pause();
    },
    heal() {
      cut = false;
      for (const s of open) s.resume();
      for (const client of held.splice(0)) {
        if (client.destroyed) continue;
        client.resume();
        join(client);
      }
    },
    isCut: () => cut,
    async close() {
      for (const s of [...open, ...held]) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
