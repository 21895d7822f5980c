// The Socket.IO peer of examples/load.rs (issue 6): the fan-out server a team would otherwise
// deploy for a live panel, run the way its documentation shows, in one Node process.
//
//   cd examples/socketio && npm ci && node server.js --listen 127.0.0.1:7900
//   node server.js --listen 127.0.0.1:7900 --ping-interval 200 --ping-timeout 2000   # (tests)
//
// A client connects over the WebSocket transport only
// (`ws://ADDR/socket.io/?EIO=4&transport=websocket&room=<room>`), joins the default namespace,
// and is put in the room named by its `room` query parameter. Every `m` event it emits is
// broadcast as is to every socket of that room, the sender included (its own copy is the load
// tool's "ack"): `io.to(room).emit("m", payload)`, which Socket.IO encodes once per broadcast.
// No log, no disk, no auth — like examples/bare.rs, but with Socket.IO's protocol, rooms and
// heartbeats (by default a ping every 25 s, which the load tool answers; a socket that does not
// answer within 20 s is closed — the load tool starts it with a longer `--ping-timeout`, because
// between its runs a socket may sit unread for up to a minute). A connection without a valid
// `room` is refused at the handshake. Rooms go when their last socket leaves, as Socket.IO
// does by default.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

function usage(why) {
  console.error(
    `socketio: ${why}\n` +
      "usage: node server.js [--listen HOST:PORT] [--ping-interval MS] [--ping-timeout MS]\n" +
      "       (defaults 127.0.0.1:7900, and Socket.IO's 25000 and 20000)",
  );
  process.exit(2);
}

let host = "127.0.0.1";
let port = 7900;
// Socket.IO's defaults.
let pingInterval = 25_000;
let pingTimeout = 20_000;
const millis = (flag, value) => {
  const ms = Number(value);
  if (!Number.isInteger(ms) || ms < 10 || ms > 3_600_000) {
    usage(`${flag} ${JSON.stringify(value)}: expected milliseconds, 10 to 3600000`);
  }
  return ms;
};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const [flag, value] = [argv[i], argv[i + 1]];
  if (value === undefined) {
    usage(`${JSON.stringify(flag)} needs a value`);
  } else if (flag === "--listen") {
    const m = /^(.+):(\d{1,5})$/.exec(value);
    if (!m || Number(m[2]) > 65535) {
      usage(`--listen ${JSON.stringify(value)}: expected HOST:PORT`);
    }
    host = m[1];
    port = Number(m[2]);
  } else if (flag === "--ping-interval") {
    pingInterval = millis(flag, value);
  } else if (flag === "--ping-timeout") {
    pingTimeout = millis(flag, value);
  } else {
    usage(`unexpected argument ${JSON.stringify(flag)}`);
  }
}

const httpServer = http.createServer((req, res) => {
  res.writeHead(404).end();
});
const io = new Server(httpServer, {
  transports: ["websocket"],
  serveClient: false,
  // Socket.IO 4's default; said here because a benchmark of it should not depend on a default.
  perMessageDeflate: false,
  pingInterval,
  pingTimeout,
  // The load tool opens thousands of connections at once.
  connectTimeout: 45_000,
});

// Refused before the namespace's CONNECT answer, so the client gets a CONNECT_ERROR (`44…`).
io.use((socket, next) => {
  const room = socket.handshake.query.room;
  if (typeof room !== "string" || room.length === 0 || room.length > 200) {
    next(new Error("the room query parameter must be 1 to 200 characters"));
  } else {
    next();
  }
});

io.on("connection", (socket) => {
  const room = socket.handshake.query.room;
  socket.join(room);
  socket.on("m", (payload) => {
    if (typeof payload === "string" && payload.length <= 65_536) {
      io.to(room).emit("m", payload);
    }
  });
});

httpServer.on("error", (e) => {
  console.error(`socketio: cannot listen on ${host}:${port}: ${e.message}`);
  process.exit(1);
});
httpServer.listen(port, host, () => {
  console.error(
    `socketio: socket.io ${require("socket.io/package.json").version} on node ${process.version}, ` +
      `listening on ws://${host}:${port}/socket.io/?EIO=4&transport=websocket&room=<room>`,
  );
});
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => process.exit(0));
}
