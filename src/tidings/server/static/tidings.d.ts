// Type declarations for tidings.js, the browser client of tidings.

export type TransportName = "ws" | "sse" | "stream" | "longpoll" | "poll";

export interface Position {
  epoch: string;
  offset: number;
}

export interface Publication<T = unknown> {
  channel: string;
  offset: number;
  epoch: string;
  id: string;
  /** Unix time in milliseconds. */
  time: number;
  event: string;
  data: T;
  cursor?: string;
}

export interface GapNotice {
  channel: string;
  epoch: string;
  /** The first offset that was asked for (last seen + 1). */
  requested: number;
  /** The oldest offset still in history, or null when history is empty. */
  available_from: number | null;
}

export interface ClientInfo {
  client: string;
  user: string;
  info: unknown;
}

export interface PublishResult {
  channel: string;
  offset: number;
  epoch: string;
  id: string;
}

/** What a client did on the wire, as far as the page can see. */
export interface ClientStats {
  /** HTTP requests made (a WebSocket upgrade, a stream, each poll). */
  requests: number;
  /** Bytes received and sent: frames and bodies plus response headers (not request headers). */
  bytes: number;
  /** Publications received (duplicates included). */
  messages: number;
  /** Connections made after the first successful one. */
  reconnects: number;
  /** Delta updates received and applied (with the `delta` option). */
  deltas: number;
}

export type ClientState = "idle" | "connecting" | "connected" | "fallback" | "disconnected" | "closed";

export interface TidingsOptions {
  token?: string;
  /** Called before each connection attempt; return a fresh token. */
  getToken?: () => string | Promise<string>;
  /** Order of transports to try; the client falls back along it. */
  transports?: TransportName[];
  /** Short polling interval in milliseconds (default 1000). */
  pollInterval?: number;
  /** Long poll timeout in seconds (default 25). */
  longPollTimeout?: number;
  minBackoff?: number;
  maxBackoff?: number;
  /** Ask for delta updates on every subscription ("ws", "sse", "stream"; `true` is "fossil"); the
   *  channels' namespaces must allow them. Applied by the client: handlers see full publications. */
  delta?: "fossil" | boolean | null;
}

type Unsubscribe = () => void;

export interface SubscriptionEvents<T> {
  publication: Publication<T>;
  gap: GapNotice;
  subscribed: Record<string, unknown>;
  join: ClientInfo;
  leave: ClientInfo;
}

export declare class Subscription<T = unknown> {
  readonly channel: string;
  /** The last position seen on this channel. */
  position: Position | null;
  on<K extends keyof SubscriptionEvents<T>>(event: K, handler: (value: SubscriptionEvents<T>[K]) => void): Unsubscribe;
  off<K extends keyof SubscriptionEvents<T>>(event: K, handler: (value: SubscriptionEvents<T>[K]) => void): void;
  unsubscribe(): void;
}

export interface ClientEvents {
  state: { state: ClientState; transport: TransportName | null };
  transport: TransportName;
  error: unknown;
}

/** One publication as written on the WebSocket: frame bytes, header included. */
export interface WireMessage {
  channel: string;
  offset: number;
  /** On the wire: compressed if `compressed`, a delta if `delta`. */
  wire: number;
  /** The same message uncompressed. */
  uncompressed: number;
  /** The publication in full, uncompressed (differs from `uncompressed` for a delta). */
  full: number;
  compressed: boolean;
  delta: boolean;
}

export interface WireStats {
  /** False where the server does not see the bytes it writes (under an ASGI server). */
  counted: boolean;
  messages: WireMessage[];
}

export declare class Tidings {
  constructor(url?: string, options?: TidingsOptions);
  readonly url: string;
  state: ClientState;
  transport: TransportName | null;
  /** The server's id of the WebSocket connection (as in presence), once connected. */
  clientId: string | null;
  readonly stats: ClientStats;
  subscribe<T = unknown>(channel: string, options?: { since?: Position }): Subscription<T>;
  publish(channel: string, data: unknown, event?: string): Promise<PublishResult>;
  presence(channel: string): Promise<ClientInfo[]>;
  /** Call the application's backend through the server's rpc proxy (WebSocket only); resolves
   *  with the result's data, rejects with an Error carrying the backend's `code`. */
  rpc<T = unknown>(method: string, data?: unknown): Promise<T>;
  /** Publications from history, oldest first (WebSocket only). */
  history<T = unknown>(channel: string, options?: { since?: Position; limit?: number }): Promise<Publication<T>[]>;
  /** What the server wrote for each publication sent on this WebSocket connection since the
   *  last call (the first call starts counting). */
  wireStats(): Promise<WireStats>;
  /** The cursor over every subscribed channel. */
  cursor(): string;
  close(): void;
  on<K extends keyof ClientEvents>(event: K, handler: (value: ClientEvents[K]) => void): Unsubscribe;
  off<K extends keyof ClientEvents>(event: K, handler: (value: ClientEvents[K]) => void): void;
}

export declare function cursorToken(channel: string, position: Position): string;
export declare function decodeCursor(cursor: string): Record<string, Position>;
/** `source` changed by a fossil delta (the format of delta updates); throws if it does not apply. */
export declare function applyFossilDelta(source: Uint8Array, delta: Uint8Array): Uint8Array;
