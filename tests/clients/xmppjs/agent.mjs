#!/usr/bin/env node
/**
 * A scriptable XMPP client for the end-to-end tests, built on xmpp.js
 * (@xmpp/client). It speaks the same JSON-lines protocol as ../xmpp_agent.py
 * (slixmpp), so a test can drive either library: one JSON command per line on
 * stdin, one JSON event per line on stdout. Stream negotiation, STARTTLS, SASL
 * (SCRAM-SHA-1 by default, xmpp.js's own choice), resource binding and iq
 * tracking are xmpp.js's own code.
 *
 *   {"cmd": "connect", "jid": "alice@example.test/phone", "password": "pw",
 *    "host": "127.0.0.1", "port": 5222, "cafile": "/path/xmpp.crt",
 *    "mech": "PLAIN"?, "direct_tls": false?, "trace": false?}
 *   {"cmd": "presence", "show": "away", "status": "lunch", "priority": 1,
 *    "extensions": ["<c xmlns='...'/>"]?}
 *   {"cmd": "presence", "type": "subscribe", "to": "bob@example.test"}
 *   {"cmd": "message", "to": "bob@example.test", "body": "hi", "type": "chat",
 *    "id": "m1"?, "extensions": ["<active xmlns='http://jabber.org/protocol/chatstates'/>"]?}
 *   {"cmd": "broadcast", "to": ["a@d", "b@d"], "body": "hello all"}
 *   {"cmd": "roster_get", "ver": ".."?} / {"cmd": "roster_set", "jid": .., "name": ..}
 *   {"cmd": "roster_remove", "jid": ..} / {"cmd": "disco_info", "to": ..}
 *   {"cmd": "raw", "xml": "<message .../>"} / {"cmd": "disconnect"} / {"cmd": "exit"}
 *
 * Events (field names and value conventions as slixmpp's agent: a missing type
 * of a message is "normal", of an available presence its show or "available";
 * missing texts are "", a missing priority is 0):
 *   {"ev": "ready"}, {"ev": "session_start", "jid", "mech"}, {"ev": "failed_auth"},
 *   {"ev": "disconnected"}, {"ev": "stream_error", "condition", "text"},
 *   {"ev": "presence", "from", "type", "show", "status", "priority", "error",
 *    "error_app", "error_text", "extensions"},
 *   {"ev": "message", "id", "from", "to", "type", "body", "delay", "no_store",
 *    "error", "error_app", "error_text", "addresses", "extensions"},
 *   {"ev": "roster", "ver", "items", "empty"}, {"ev": "roster_push", "items"},
 *   {"ev": "iq_result", "tag", "type", "xml"}, {"ev": "iq_error", "tag", "error",
 *    "error_app", "error_text"}, {"ev": "iq_timeout", "tag"},
 *   {"ev": "stanza", "xml"} for every incoming stanza when connect had "trace": true,
 *   {"ev": "agent_error", "error"}, {"ev": "bad_command", "cmd"}.
 *
 * `extensions` lists "{namespace}name" of every child element that is not one
 * of the stanza's own RFC 6120/6121 children (body/subject/thread of a message,
 * show/status/priority of a presence).
 *
 * The tests' JIDs are in example.test, which does not resolve: the agent
 * connects to the explicit host:port only (service xmpp://HOST:PORT, so
 * xmpp.js skips its SRV/A resolution), refuses a host that is not an IP
 * literal, and disables node's resolver so that no DNS query can leave.
 *
 * XMPPJS_AGENT_DEBUG=1 in the environment logs every element, both ways and
 * negotiation included, on stderr.
 */

import dns from "node:dns";
import fs from "node:fs";
import net from "node:net";
import readline from "node:readline";

import { client, xml, jid as parseJid } from "@xmpp/client";
// The TLS socket class that both @xmpp/tls (direct TLS) and @xmpp/starttls use.
import XmppTlsSocket from "@xmpp/tls/lib/Socket.js";

const NS_CLIENT = "jabber:client";
const NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas";
const NS_ERRORS = "urn:presenced:errors";
const NS_ADDRESS = "http://jabber.org/protocol/address";
const NS_ROSTER = "jabber:iq:roster";
const NS_DISCO_INFO = "http://jabber.org/protocol/disco#info";
const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const SHOW_TYPES = new Set(["away", "chat", "dnd", "xa"]);
const OWN_CHILDREN = {
  message: new Set(["body", "subject", "thread"]),
  presence: new Set(["show", "status", "priority"]),
};

// ---- no DNS, ever: everything here is an IP literal.
function noDns(name) {
  return (...args) => {
    const err = new Error(`DNS is disabled in the test agent (${name} ${args[0]})`);
    emit({ ev: "agent_error", error: err.message });
    const cb = args.find((a) => typeof a === "function");
    if (cb) {
      process.nextTick(() => cb(err));
      return undefined;
    }
    throw err;
  };
}
for (const f of ["lookup", "lookupService", "resolve", "resolve4", "resolve6", "resolveSrv", "resolveAny"]) {
  dns[f] = noDns(f);
  dns.promises[f] = noDns(f);
}

// ---- TLS options for xmpp.js's sockets. xmpp.js passes only {socket, host}
// (STARTTLS) or {port, host} (direct TLS) to tls.connect; the test CA and the
// name to verify (the XMPP domain, not the IP we dial) are added here.
const tlsExtra = {};
const tlsConnect = XmppTlsSocket.prototype.connect;
XmppTlsSocket.prototype.connect = function connect(options, ...rest) {
  return tlsConnect.call(this, { ...options, ...tlsExtra }, ...rest);
};

function emit(ev) {
  process.stdout.write(JSON.stringify(ev) + "\n");
}

function errorOf(stanza) {
  return errorFields(stanza.getChild("error", NS_CLIENT));
}

/** [condition, presenced's application condition, text] of an <error/>. */
function errorFields(err) {
  if (!err) return [null, null, null];
  let cond = null;
  let app = null;
  let text = null;
  for (const child of err.getChildElements()) {
    const ns = child.getNS();
    if (ns === NS_STANZAS) {
      if (child.getName() === "text") text = child.text();
      else cond = child.getName();
    } else if (ns === NS_ERRORS) {
      app = child.getName();
    }
  }
  return [cond, app, text];
}

function extensionsOf(stanza) {
  const own = OWN_CHILDREN[stanza.getName()] ?? new Set();
  return stanza
    .getChildElements()
    .filter((c) => !(c.getNS() === NS_CLIENT && own.has(c.getName())))
    .map((c) => `{${c.getNS() ?? ""}}${c.getName()}`);
}

function rosterItems(query) {
  const items = {};
  for (const item of query?.getChildren("item", NS_ROSTER) ?? []) {
    items[item.attrs.jid] = {
      subscription: item.attrs.subscription ?? null,
      ask: item.attrs.ask ?? null,
      name: item.attrs.name ?? null,
    };
  }
  return items;
}

/** Parse a fragment of XML elements with xmpp.js's own stream parser. */
function parseFragment(text) {
  const parser = new xml.Parser();
  const out = [];
  let failed = null;
  parser.on("element", (el) => out.push(el));
  parser.on("error", (err) => {
    failed = err;
  });
  parser.write(`<x xmlns='${NS_CLIENT}'>${text}</x>`);
  if (failed) throw failed;
  for (const el of out) el.parent = null;
  return out;
}

function onMessage(m) {
  const [cond, app, text] = errorOf(m);
  const delay = m.getChild("delay", "urn:xmpp:delay");
  const addrs = m.getChild("addresses", NS_ADDRESS);
  emit({
    ev: "message",
    id: m.attrs.id ?? "",
    from: m.attrs.from ?? "",
    to: m.attrs.to ?? "",
    type: m.attrs.type || "normal",
    body: m.getChildText("body", NS_CLIENT) ?? "",
    delay: delay ? (delay.attrs.stamp ?? null) : null,
    no_store: m.getChild("no-store", "urn:xmpp:hints") !== undefined,
    error: cond,
    error_app: app,
    error_text: text,
    addresses: addrs ? addrs.getChildren("address", NS_ADDRESS).map((a) => a.attrs.jid ?? null) : null,
    extensions: extensionsOf(m),
  });
}

function onPresence(p) {
  const [cond, app, text] = errorOf(p);
  const show = p.getChildText("show", NS_CLIENT) ?? "";
  const prio = Number.parseInt(p.getChildText("priority", NS_CLIENT) ?? "", 10);
  emit({
    ev: "presence",
    from: p.attrs.from ?? "",
    type: p.attrs.type || (SHOW_TYPES.has(show) ? show : "available"),
    show,
    status: p.getChildText("status", NS_CLIENT) ?? "",
    priority: Number.isNaN(prio) ? 0 : prio,
    error: cond,
    error_app: app,
    error_text: text,
    extensions: extensionsOf(p),
  });
}

const state = { xmpp: null, trace: false, reported: new WeakSet(), mech: null, challenge: null };

function reportError(err) {
  if (err && typeof err === "object") {
    if (state.reported.has(err)) return;
    state.reported.add(err);
  }
  if (err?.name === "SASLError") {
    emit({ ev: "failed_auth", condition: err.condition ?? null, text: err.text || null, challenge: state.challenge ?? null });
    // As slixmpp does once no mechanism is left: give up and close.
    state.xmpp?.disconnect().catch(() => {});
  } else if (err?.name === "StreamError") {
    emit({ ev: "stream_error", condition: err.condition ?? null, text: err.text || null });
  } else {
    emit({ ev: "agent_error", error: String(err?.stack ?? err) });
  }
}

async function sendIq(iq, tag) {
  try {
    const res = await state.xmpp.iqCaller.request(iq, 10_000);
    emit({ ev: "iq_result", tag, type: res.attrs.type, xml: res.toString() });
    return res;
  } catch (err) {
    if (err?.name === "StanzaError" && err.element) {
      const [cond, app, text] = errorFields(err.element);
      emit({ ev: "iq_error", tag, error: cond ?? err.condition, error_app: app, error_text: text });
    } else if (err?.name === "TimeoutError") {
      emit({ ev: "iq_timeout", tag });
    } else {
      reportError(err);
    }
  }
  return null;
}

function connect(cmd) {
  const full = parseJid(cmd.jid);
  const host = cmd.host ?? "127.0.0.1";
  if (!net.isIP(host)) throw new Error(`host must be an IP address, got ${host}`);
  const port = Number(cmd.port);
  const scheme = cmd.direct_tls ? "xmpps" : "xmpp";
  const service = `${scheme}://${net.isIPv6(host) ? `[${host}]` : host}:${port}`;

  tlsExtra.servername = full.domain;
  if (cmd.cafile) {
    tlsExtra.ca = fs.readFileSync(cmd.cafile);
    tlsExtra.rejectUnauthorized = true;
  } else {
    delete tlsExtra.ca;
    tlsExtra.rejectUnauthorized = false;
  }

  const username = full.local;
  const password = cmd.password;
  const options = {
    service,
    domain: full.domain,
    resource: full.resource || undefined,
    timeout: 10_000,
    username,
    password,
  };
  if (cmd.mech) {
    // xmpp.js's hook for choosing the mechanism (default: its first one, SCRAM-SHA-1).
    options.credentials = (authenticate, mechanisms) => {
      if (!mechanisms.includes(cmd.mech)) {
        throw new Error(`mechanism ${cmd.mech} not offered/supported: ${mechanisms}`);
      }
      return authenticate({ username, password }, cmd.mech);
    };
  }
  const xmpp = client(options);
  state.xmpp = xmpp;
  state.trace = Boolean(cmd.trace);
  xmpp.reconnect.stop(); // a test sees disconnects; nothing reconnects behind its back

  xmpp.on("error", reportError);
  if (process.env.XMPPJS_AGENT_DEBUG) {
    // Every element both ways, negotiation included, on stderr.
    xmpp.on("element", (el) => process.stderr.write(`IN  ${el}\n`));
    xmpp.on("send", (el) => process.stderr.write(`OUT ${el}\n`));
  }
  xmpp.on("send", (el) => {
    if (el.is("auth", NS_SASL)) state.mech = el.attrs.mechanism ?? null;
  });
  xmpp.on("nonza", (el) => {
    // Kept for failed_auth: what the server challenged with (a SCRAM server-first
    // message holds only the nonces, salt and iteration count).
    if (el.is("challenge", NS_SASL)) state.challenge = Buffer.from(el.text(), "base64").toString();
  });
  xmpp.on("disconnect", () => emit({ ev: "disconnected" }));
  xmpp.on("online", (address) => {
    emit({ ev: "session_start", jid: address.toString(), mech: state.mech });
  });
  xmpp.on("stanza", (stanza) => {
    if (state.trace) emit({ ev: "stanza", xml: stanza.toString() });
    if (stanza.is("message")) onMessage(stanza);
    else if (stanza.is("presence")) onPresence(stanza);
  });

  // Roster pushes (RFC 6121 §2.1.6): only from the account itself.
  xmpp.iqCallee.set(NS_ROSTER, "query", (ctx) => {
    const from = ctx.stanza.attrs.from;
    if (from && from !== xmpp.jid?.bare().toString()) return undefined;
    emit({ ev: "roster_push", items: rosterItems(ctx.element) });
    return true;
  });
  xmpp.iqCallee.get(NS_DISCO_INFO, "query", () =>
    xml(
      "query",
      { xmlns: NS_DISCO_INFO },
      xml("identity", { category: "client", type: "pc", name: "xmpp.js test agent" }),
      xml("feature", { var: NS_DISCO_INFO }),
      xml("feature", { var: "urn:xmpp:ping" }),
    ),
  );

  xmpp.start().catch(reportError);
}

function presenceOf(cmd) {
  const attrs = {};
  if (cmd.to) attrs.to = cmd.to;
  if (cmd.type) attrs.type = cmd.type;
  if (cmd.id) attrs.id = cmd.id;
  return xml(
    "presence",
    attrs,
    cmd.show ? xml("show", {}, cmd.show) : null,
    cmd.status ? xml("status", {}, cmd.status) : null,
    cmd.priority !== undefined && cmd.priority !== null ? xml("priority", {}, String(cmd.priority)) : null,
    ...(cmd.extensions ?? []).flatMap(parseFragment),
  );
}

async function handle(cmd) {
  const c = cmd.cmd;
  const xmpp = state.xmpp;
  const domain = () => xmpp.jid?.domain ?? xmpp.options.domain;
  switch (c) {
    case "connect":
      connect(cmd);
      break;
    case "presence":
      await xmpp.send(presenceOf(cmd));
      break;
    case "message": {
      const attrs = { to: cmd.to, type: cmd.type ?? "chat" };
      if (cmd.id) attrs.id = cmd.id;
      await xmpp.send(
        xml(
          "message",
          attrs,
          cmd.body !== undefined && cmd.body !== null ? xml("body", {}, cmd.body) : null,
          ...(cmd.extensions ?? []).flatMap(parseFragment),
        ),
      );
      break;
    }
    case "broadcast": {
      const attrs = { to: cmd.server ?? domain(), type: cmd.type ?? "normal" };
      if (cmd.id) attrs.id = cmd.id;
      await xmpp.send(
        xml(
          "message",
          attrs,
          xml("body", {}, cmd.body),
          xml(
            "addresses",
            { xmlns: NS_ADDRESS },
            cmd.to.map((j) => xml("address", { type: "to", jid: j })),
          ),
        ),
      );
      break;
    }
    case "roster_get": {
      const q = xml("query", { xmlns: NS_ROSTER });
      if (cmd.ver !== undefined && cmd.ver !== null) q.attrs.ver = cmd.ver;
      const res = await sendIq(xml("iq", { type: "get" }, q), cmd.tag ?? "roster");
      if (res) {
        const rq = res.getChild("query", NS_ROSTER);
        emit({
          ev: "roster",
          ver: rq?.attrs.ver ?? null,
          items: rosterItems(rq),
          empty: rq === undefined,
        });
      }
      break;
    }
    case "roster_set":
    case "roster_remove": {
      const attrs = { jid: cmd.jid };
      if (c === "roster_remove") attrs.subscription = "remove";
      else if (cmd.name) attrs.name = cmd.name;
      await sendIq(
        xml("iq", { type: "set" }, xml("query", { xmlns: NS_ROSTER }, xml("item", attrs))),
        cmd.tag ?? c,
      );
      break;
    }
    case "disco_info":
      await sendIq(
        xml("iq", { type: "get", to: cmd.to ?? domain() }, xml("query", { xmlns: NS_DISCO_INFO })),
        cmd.tag ?? "disco",
      );
      break;
    case "raw":
      await xmpp.write(cmd.xml);
      break;
    case "disconnect":
      await xmpp.stop();
      break;
    case "exit":
      return false;
    default:
      emit({ ev: "bad_command", cmd: c });
  }
  return true;
}

async function shutdown() {
  const xmpp = state.xmpp;
  if (xmpp && xmpp.status !== "offline" && xmpp.status !== "disconnect") {
    await Promise.race([xmpp.stop().catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
  }
  process.exit(0);
}

async function main() {
  emit({ ev: "ready" });
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const raw of rl) {
    const line = raw.trim();
    if (!line) continue;
    try {
      if (!(await handle(JSON.parse(line)))) break;
    } catch (err) {
      // report, keep serving
      emit({ ev: "agent_error", error: String(err?.stack ?? err) });
    }
  }
  await shutdown();
}

process.on("unhandledRejection", (err) => emit({ ev: "agent_error", error: String(err?.stack ?? err) }));
main();
