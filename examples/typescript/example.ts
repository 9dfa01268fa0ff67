// Type-checked in the test suite with `tsc --noEmit` against tidings.d.ts.
import { Tidings, type Publication, type GapNotice } from "../../src/tidings/server/static/tidings.js";

interface ChatMessage { text: string; nick: string }

const client = new Tidings("http://127.0.0.1:8600", { transports: ["ws", "sse", "longpoll"] });
client.on("state", ({ state, transport }) => console.log(state, transport));

const room = client.subscribe<ChatMessage>("chat:lobby");
room.on("publication", (pub: Publication<ChatMessage>) => console.log(pub.data.nick, pub.data.text));
room.on("gap", (gap: GapNotice) => console.warn("missed from", gap.requested));
room.on("join", (who) => console.log("joined:", who.user));

async function send(text: string): Promise<number> {
  const result = await client.publish("chat:lobby", { text, nick: "ada" });
  return result.offset;
}

void send("hello");
const everyone: Promise<{ client: string }[]> = client.presence("chat:lobby");
void everyone;
