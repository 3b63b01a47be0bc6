// Reading a message payload: JSON that may be anything, since anyone allowed to publish may send it.

/** A payload that cannot be what it claims: retrying cannot fix it (dead-letter or terminate it). */
export class MalformedPayload extends Error {}

const text = new TextDecoder(); // one for all: decode() without { stream } keeps no state between calls

/** The JSON object in a payload, or a MalformedPayload that says why it is not one. */
export function jsonObject(data: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text.decode(data));
  } catch (err) {
    throw new MalformedPayload(`invalid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new MalformedPayload("expected a JSON object");
  return value as Record<string, unknown>;
}
