// What the endpoints take and answer, and the reading of a request body: anything else is a 400.
import { jsonObject } from "@repo/kit";
import { PRICES } from "./setup.js";

export interface QuoteRequest {
  sku: string;
  qty: number;
}
export interface Quote extends QuoteRequest {
  price_cents: number;
  version: string;
}
export interface ReserveRequest extends QuoteRequest {
  /** Chosen by the caller, the same on every retry: the reservation is made once per id. */
  id: string;
}
export interface Reservation extends ReserveRequest {
  price_cents: number;
  /** The instance that made it (the first answer, on a retry too). */
  by: string;
  /** True when this id was reserved before: the answer is the first one, nothing was reserved again. */
  duplicate: boolean;
}

/** A service error the caller gets back as a ServiceError with this code (Nats-Service-Error-Code). */
export class Refused extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

const ID = /^[A-Za-z0-9_-]{1,128}$/;

export function quoteRequest(data: Uint8Array): QuoteRequest {
  let body: Record<string, unknown>;
  try {
    body = jsonObject(data);
  } catch (err) {
    throw new Refused(400, (err as Error).message);
  }
  const { sku, qty } = body;
  if (typeof sku !== "string" || !Number.isInteger(qty) || (qty as number) < 1 || (qty as number) > 1_000)
    throw new Refused(400, 'expected {"sku": a string, "qty": an integer from 1 to 1000}');
  if (PRICES[sku] === undefined) throw new Refused(404, `no such sku: ${sku.slice(0, 64)}`);
  return { sku, qty: qty as number };
}

export function reserveRequest(data: Uint8Array): ReserveRequest {
  const { sku, qty } = quoteRequest(data);
  const { id } = jsonObject(data);
  if (typeof id !== "string" || !ID.test(id)) throw new Refused(400, 'expected an "id" of 1 to 128 letters, digits, - or _');
  return { id, sku, qty };
}

export const priceOf = (r: QuoteRequest): number => PRICES[r.sku]! * r.qty;
