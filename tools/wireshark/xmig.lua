-- xmig.lua: Wireshark dissector for xmig's XIA traffic.
--
-- xianet carries XIP over UDP, one XIP packet per datagram. Wireshark's own `xip`
-- dissector registers only ethertype 0xC0DE and knows none of the layers above XIP
-- that xmig uses, so this dissector decodes, from UDP:
--   XIP        header and both DAGs (shared/xip-header.ts)
--   XCMP       echo, echo reply, errors (xianet/xcmp.ts)
--   transport  the type byte (xianet/transport-header.ts), then
--     DGRAM    by the service SID: XHCP beacons and solicitations (xianet/xhcp.ts),
--              HID-move notices and acks (shared/mobility-message.ts, shared/move-notice.ts,
--              shared/signed-message.ts), XROUTE hellos and registrations
--              (xianet/xroute-message.ts), name service (xianet/names/xns-message.ts)
--     STREAM   segment header and frames (xianet/xstream/stream-segment.ts); on the
--              migration SID the stream's bytes are the mover's control messages
--              (mover/control-messages.ts), followed across segments
--     CHUNK    REQUEST / DATA / NOT_FOUND headers (xianet/chunk/chunk-messages.ts, ChunkOffset)
--
-- Use:   tshark -X lua_script:/usr/share/xmig/wireshark/xmig.lua -r capture.pcapng
-- or copy it to ~/.local/lib/wireshark/plugins/. UDP datagrams are tried heuristically
-- (a well-formed XIP header whose lengths add up); "Decode As... XMIG-XIP" or the
-- `xmig_xip.udp_ports` preference names ports outright.
--
-- Every layout here is the one in the file named beside it; when one changes, change
-- this file too (test/integration/wireshark-dissector.test.ts decodes a real capture
-- with it and fails on any frame it cannot read).

local band, rshift = bit.band, bit.rshift

-- ---- constants (from the TypeScript sources) -----------------------------------------

local XIP_BASE, XIP_NODE, XIP_LAST_ENTRY, XIP_EDGE_UNUSED = 8, 28, 0x7e, 0x7f
local NXT = { NONE = 59, TRANSPORT = 60, XCMP = 61 }
local TRANSPORT = { DGRAM = 1, STREAM = 2, CHUNK = 3 }
local XID_TYPES = { [0x10] = "AD", [0x11] = "HID", [0x12] = "CID", [0x13] = "SID", [0x14] = "IP" }
local SID = {
  XHCP = "1110000000000000000000000000000000001111",
  XROUTE = "1110000000000000000000000000000000001112",
  NAME_SERVER = "1110000000000000000000000000000000001113",
  MOBILITY = "1110000000000000000000000000000000001114",
  MIGRATION = "1110000000000000000000000000000000001115",
}
local SID_NAMES = {}
for name, id in pairs(SID) do SID_NAMES[id] = name end

local XCMP_TYPES = { [0] = "echo reply", [3] = "unreachable", [5] = "redirect", [8] = "echo", [11] = "time exceeded" }
local XHCP_ENTRIES = {
  [1] = "AD", [2] = "gateway HID", [3] = "gateway 4ID", [4] = "name-server DAG",
  [100] = "AD key", [101] = "timestamp", [102] = "link id", [103] = "solicit", [110] = "signature",
}
local MOBILITY_TYPES = { [1] = "NOTICE", [2] = "FORWARDED", [3] = "ACK" }
local SIGNED_KINDS = { [1] = "move notice", [2] = "move ack", [3] = "name record", [4] = "xroute", [5] = "beacon" }
local XROUTE_TYPES = { [0] = "HELLO", [1] = "LSA", [2] = "HOST_REGISTER", [3] = "REGISTER_ACK", [4] = "HID_MOVED" }
local NS_TYPES = {
  [1] = "REGISTER", [2] = "QUERY", [3] = "RQUERY", [4] = "RESPONSE_REGISTER",
  [5] = "RESPONSE_QUERY", [6] = "RESPONSE_RQUERY", [7] = "RESPONSE_ERROR",
}
local STREAM_FRAMES = {
  [0x01] = "PING", [0x02] = "ACK", [0x04] = "RESET", [0x08] = "STREAM", [0x09] = "STREAM+FIN",
  [0x10] = "MAX_DATA", [0x1a] = "PATH_CHALLENGE", [0x1b] = "PATH_RESPONSE", [0x20] = "HANDSHAKE",
}
local CHUNK_OPS = { [1] = "REQUEST", [2] = "DATA", [3] = "NOT_FOUND" }
local CHUNK_NO_STORE = 0x80
local MOVER_TYPES = {
  [1] = "HELLO", [2] = "WELCOME", [3] = "OFFER", [4] = "ACK", [5] = "DONE",
  [6] = "DONE_ACK", [7] = "REQUEST", [8] = "DATA", [9] = "ERROR", [10] = "KEEPALIVE",
}
local MOVER_MAX_FRAME = 1 + 20 + 16 * 1024 * 1024

-- ---- protocols and fields -----------------------------------------------------------

local p_xip = Proto("xmig_xip", "XIP over xianet UDP (xmig)")
local p_xcmp = Proto("xmig_xcmp", "XCMP (xmig)")
local p_xhcp = Proto("xmig_xhcp", "XHCP beacon (xmig)")
local p_mob = Proto("xmig_mobility", "xmig HID-move notice")
local p_xroute = Proto("xmig_xroute", "XROUTE (xmig)")
local p_xns = Proto("xmig_xns", "XIA name service (xmig)")
local p_dgram = Proto("xmig_dgram", "xianet DGRAM")
local p_stream = Proto("xmig_stream", "xianet STREAM")
local p_chunk = Proto("xmig_chunk", "xianet CHUNK")
local p_mover = Proto("xmig_mover", "xmig migration control")

local F = ProtoField
local f = {
  version = F.uint8("xmig_xip.version", "Version"),
  next_hdr = F.uint8("xmig_xip.next_hdr", "Next header", base.DEC, { [59] = "none", [60] = "transport", [61] = "XCMP" }),
  payload_len = F.uint16("xmig_xip.payload_len", "Payload length"),
  hop_limit = F.uint8("xmig_xip.hop_limit", "Hop limit"),
  num_dst = F.uint8("xmig_xip.num_dst", "Destination nodes"),
  num_src = F.uint8("xmig_xip.num_src", "Source nodes"),
  last_node = F.uint8("xmig_xip.last_node", "Last node", base.DEC, { [XIP_LAST_ENTRY] = "entry" }),
  dst = F.string("xmig_xip.dst", "Destination DAG"),
  src = F.string("xmig_xip.src", "Source DAG"),
  node = F.bytes("xmig_xip.node", "Node"),
  xid_type = F.uint32("xmig_xip.xid_type", "Principal type", base.HEX, XID_TYPES),
  xid_id = F.bytes("xmig_xip.xid_id", "ID"),
  edges = F.bytes("xmig_xip.edges", "Edges"),
  dst_sink = F.string("xmig_xip.dst_sink", "Destination sink"),
  src_sink = F.string("xmig_xip.src_sink", "Source sink"),

  xcmp_type = F.uint8("xmig_xcmp.type", "Type", base.DEC, XCMP_TYPES),
  xcmp_code = F.uint8("xmig_xcmp.code", "Code"),
  xcmp_checksum = F.uint16("xmig_xcmp.checksum", "Checksum", base.HEX),
  xcmp_id = F.uint16("xmig_xcmp.id", "Identifier"),
  xcmp_seq = F.uint16("xmig_xcmp.seq", "Sequence"),
  xcmp_data = F.bytes("xmig_xcmp.data", "Data"),

  transport = F.uint8("xmig_xip.transport", "Transport", base.DEC, { [1] = "DGRAM", [2] = "STREAM", [3] = "CHUNK" }),
  dgram_service = F.string("xmig_dgram.service", "Service"),
  dgram_data = F.bytes("xmig_dgram.data", "Data"),

  xhcp_seq = F.uint32("xmig_xhcp.seq", "Sequence"),
  xhcp_count = F.uint16("xmig_xhcp.entries", "Entries"),
  xhcp_entry_type = F.int16("xmig_xhcp.entry_type", "Entry type", base.DEC, XHCP_ENTRIES),
  xhcp_entry = F.string("xmig_xhcp.entry", "Entry"),
  xhcp_ad = F.string("xmig_xhcp.ad", "AD"),
  xhcp_gateway = F.string("xmig_xhcp.gateway", "Gateway HID"),

  mob_type = F.uint8("xmig_mobility.type", "Type", base.DEC, MOBILITY_TYPES),
  signed_version = F.uint8("xmig_mobility.signed_version", "Signed message version"),
  signed_kind = F.uint8("xmig_mobility.kind", "Kind", base.DEC, SIGNED_KINDS),
  signed_key = F.bytes("xmig_mobility.public_key", "Public key (Ed25519)"),
  signed_len = F.uint16("xmig_mobility.body_len", "Body length"),
  signature = F.bytes("xmig_mobility.signature", "Signature"),
  mob_hid = F.string("xmig_mobility.hid", "HID"),
  mob_new_ad = F.string("xmig_mobility.new_ad", "New AD"),
  mob_new_router = F.string("xmig_mobility.new_router", "New router HID"),
  mob_new_link = F.string("xmig_mobility.new_link", "New link id"),
  mob_old_ad = F.string("xmig_mobility.old_ad", "Old AD"),
  mob_old_router = F.string("xmig_mobility.old_router", "Old router HID"),
  mob_old_link = F.string("xmig_mobility.old_link", "Old link id"),
  mob_seq = F.uint64("xmig_mobility.seq", "Sequence"),
  mob_ts = F.uint64("xmig_mobility.timestamp", "Timestamp (ms)"),
  mob_router = F.string("xmig_mobility.router", "Acknowledging router HID"),

  xroute_type = F.uint8("xmig_xroute.type", "Type", base.DEC, XROUTE_TYPES),
  xroute_field = F.string("xmig_xroute.field", "Field"),

  xns_type = F.uint8("xmig_xns.type", "Type", base.DEC, NS_TYPES),
  xns_flags = F.uint8("xmig_xns.flags", "Flags", base.HEX, { [0] = "none", [1] = "MIGRATE" }),
  xns_field = F.string("xmig_xns.field", "Field"),

  st_version = F.uint8("xmig_stream.version", "Version"),
  st_cid = F.bytes("xmig_stream.connection_id", "Connection ID"),
  st_pn = F.uint64("xmig_stream.packet_number", "Packet number"),
  st_frame = F.uint8("xmig_stream.frame", "Frame", base.HEX, STREAM_FRAMES),
  st_offset = F.uint64("xmig_stream.offset", "Offset"),
  st_length = F.uint32("xmig_stream.length", "Length"),
  st_data = F.bytes("xmig_stream.data", "Data"),
  st_ack_start = F.uint64("xmig_stream.ack_start", "Acked from"),
  st_ack_end = F.uint64("xmig_stream.ack_end", "Acked to (exclusive)"),
  st_reset = F.uint16("xmig_stream.reset_code", "Reset code"),
  st_max = F.uint64("xmig_stream.max_data", "Max data"),
  st_path = F.bytes("xmig_stream.path_data", "Path data"),
  st_role = F.uint8("xmig_stream.role", "Role", base.DEC, { [0] = "initiator", [1] = "acceptor" }),

  ch_op = F.uint8("xmig_chunk.op", "Op", base.DEC, CHUNK_OPS),
  ch_no_store = F.bool("xmig_chunk.no_store", "NO_STORE (routers must not cache)"),
  ch_req = F.uint32("xmig_chunk.request_id", "Request id"),
  ch_cid = F.bytes("xmig_chunk.cid", "CID"),
  ch_offset = F.uint32("xmig_chunk.offset", "Offset"),
  ch_length = F.uint32("xmig_chunk.length", "Length wanted (0 = all)"),
  ch_total = F.uint32("xmig_chunk.total", "Chunk length"),
  ch_fragment = F.uint32("xmig_chunk.fragment_length", "Fragment length"),
  ch_max_fragment = F.uint16("xmig_chunk.max_fragment", "Largest fragment payload taken (0 = the server's MTU decides)"),

  mv_length = F.uint32("xmig_mover.length", "Length"),
  mv_type = F.uint8("xmig_mover.type", "Type", base.DEC, MOVER_TYPES),
  mv_session = F.bytes("xmig_mover.session", "Session"),
  mv_version = F.uint8("xmig_mover.version", "Version"),
  mv_mode = F.uint8("xmig_mover.mode", "Mode", base.DEC, { [0] = "xia", [1] = "tcp" }),
  mv_source = F.string("xmig_mover.source", "Source DAG"),
  mv_round = F.uint64("xmig_mover.round", "Round"),
  mv_count = F.uint32("xmig_mover.count", "Chunks"),
  mv_kind = F.uint8("xmig_mover.chunk_kind", "Chunk kind", base.DEC, { [0] = "fetch", [1] = "zero" }),
  mv_chunk_len = F.uint32("xmig_mover.chunk_length", "Chunk length"),
  mv_cid = F.bytes("xmig_mover.cid", "CID"),
  mv_rounds = F.uint64("xmig_mover.rounds", "Rounds"),
  mv_bytes = F.uint64("xmig_mover.bytes", "Bytes"),
  mv_text = F.string("xmig_mover.text", "Message"),
  mv_part = F.string("xmig_mover.part", "Part"),
}
p_xip.fields = {
  f.version, f.next_hdr, f.payload_len, f.hop_limit, f.num_dst, f.num_src, f.last_node,
  f.dst, f.src, f.node, f.xid_type, f.xid_id, f.edges, f.dst_sink, f.src_sink, f.transport,
}
p_xcmp.fields = { f.xcmp_type, f.xcmp_code, f.xcmp_checksum, f.xcmp_id, f.xcmp_seq, f.xcmp_data }
p_dgram.fields = { f.dgram_service, f.dgram_data }
p_xhcp.fields = { f.xhcp_seq, f.xhcp_count, f.xhcp_entry_type, f.xhcp_entry, f.xhcp_ad, f.xhcp_gateway }
p_mob.fields = {
  f.mob_type, f.signed_version, f.signed_kind, f.signed_key, f.signed_len, f.signature, f.mob_hid,
  f.mob_new_ad, f.mob_new_router, f.mob_new_link, f.mob_old_ad, f.mob_old_router, f.mob_old_link,
  f.mob_seq, f.mob_ts, f.mob_router,
}
p_xroute.fields = { f.xroute_type, f.xroute_field }
p_xns.fields = { f.xns_type, f.xns_flags, f.xns_field }
p_stream.fields = {
  f.st_version, f.st_cid, f.st_pn, f.st_frame, f.st_offset, f.st_length, f.st_data, f.st_ack_start,
  f.st_ack_end, f.st_reset, f.st_max, f.st_path, f.st_role,
}
p_chunk.fields = { f.ch_op, f.ch_no_store, f.ch_req, f.ch_cid, f.ch_offset, f.ch_length, f.ch_total, f.ch_fragment, f.ch_max_fragment }
p_mover.fields = {
  f.mv_length, f.mv_type, f.mv_session, f.mv_version, f.mv_mode, f.mv_source, f.mv_round, f.mv_count,
  f.mv_kind, f.mv_chunk_len, f.mv_cid, f.mv_rounds, f.mv_bytes, f.mv_text, f.mv_part,
}

local e_malformed = ProtoExpert.new("xmig_xip.malformed", "Malformed xmig message", expert.group.MALFORMED, expert.severity.ERROR)
local e_continued = ProtoExpert.new("xmig_mover.continued", "Control message continues in a later segment", expert.group.REASSEMBLE, expert.severity.NOTE)
p_xip.experts = { e_malformed, e_continued }

p_xip.prefs.udp_ports = Pref.range("UDP ports", "", "UDP ports always decoded as XIP (heuristics find the others)", 65535)
p_xip.prefs.heuristic = Pref.bool("Try every UDP datagram", true, "Decode UDP datagrams whose first bytes are a well-formed XIP header")

-- ---- helpers --------------------------------------------------------------------------

--- A problem in the bytes, shown in the tree and the expert info; never a Lua error.
local function malformed(tree, tvb, offset, text)
  local length = math.max(0, tvb:len() - offset)
  local range = length > 0 and tvb:range(offset, length) or tvb:range(0, 0)
  tree:add_proto_expert_info(e_malformed, text)
  tree:add(range, "Malformed: " .. text)
end

local function hex(range) return tostring(range:bytes()):lower() end

--- An XID on the wire (type u32 BE, id 20 bytes) as its text form, `TYPE:hex`.
local function xid_text(tvb, offset)
  local t = tvb:range(offset, 4):uint()
  local name = XID_TYPES[t] or string.format("0x%x", t)
  return name .. ":" .. hex(tvb:range(offset + 4, 20))
end

--- Reads a DAG's nodes: { xids = {...}, edges = { [i] = {...} }, entry = {...} } (0-based indices).
local function read_dag(tvb, offset, count)
  local dag = { xids = {}, edges = {}, entry = {} }
  for i = 0, count - 1 do
    local at = offset + i * XIP_NODE
    dag.xids[i] = xid_text(tvb, at)
    local edges = {}
    for e = 0, 3 do
      local b = tvb:range(at + 24 + e, 1):uint()
      if band(b, 0x7f) ~= XIP_EDGE_UNUSED then edges[#edges + 1] = band(b, 0x7f) end
    end
    if i == count - 1 then dag.entry = edges; dag.edges[i] = {} else dag.edges[i] = edges end
  end
  dag.count = count
  return dag
end

--- The DAG as shared/dag.ts prints it: the RE form where the shape has one, else the DAG form.
local function dag_text(dag)
  local n = dag.count
  local parts, used, current = { "RE" }, {}, -1
  local function take(i) if used[i] then return false end used[i] = true return true end
  local function re()
    while current ~= n - 1 do
      local out = current < 0 and dag.entry or dag.edges[current]
      if #out == 0 or #out > 2 then return nil end
      local intent = out[1]
      if intent >= n then return nil end
      if #out == 2 then
        local path, fb = {}, out[2]
        while fb ~= intent do
          if fb >= n or not take(fb) then return nil end
          path[#path + 1] = dag.xids[fb]
          local nxt = dag.edges[fb]
          if #nxt ~= 1 then return nil end
          fb = nxt[1]
        end
        if #path == 0 then return nil end
        parts[#parts + 1] = "("
        for _, x in ipairs(path) do parts[#parts + 1] = x end
        parts[#parts + 1] = ")"
      end
      if not take(intent) then return nil end
      parts[#parts + 1] = dag.xids[intent]
      current = intent
    end
    for i = 0, n - 1 do if not used[i] then return nil end end
    return table.concat(parts, " ")
  end
  local text = n > 0 and re() or nil
  if text then return text end
  local lines = { "DAG" }
  for _, e in ipairs(dag.entry) do lines[#lines + 1] = " " .. e end
  lines[#lines + 1] = " - "
  for i = 0, n - 2 do
    lines[#lines + 1] = dag.xids[i]
    for _, e in ipairs(dag.edges[i]) do lines[#lines + 1] = " " .. e end
    lines[#lines + 1] = " - "
  end
  if n > 0 then lines[#lines + 1] = dag.xids[n - 1] end
  return table.concat(lines)
end

--- NUL-terminated text at offset: text, end offset (past the NUL), or nil if unterminated.
local function cstring(tvb, offset, limit)
  for i = offset, limit - 1 do
    if tvb:range(i, 1):uint() == 0 then
      return (i > offset) and tvb:range(offset, i - offset):string() or "", i + 1
    end
  end
  return nil
end

-- ---- XCMP -----------------------------------------------------------------------------

local function dissect_xcmp(tvb, pinfo, tree)
  local t = tree:add(p_xcmp, tvb:range(0, tvb:len()))
  if tvb:len() < 8 then return malformed(t, tvb, 0, "XCMP message shorter than its 8-byte header") end
  local kind = tvb:range(0, 1):uint()
  t:add(f.xcmp_type, tvb:range(0, 1))
  t:add(f.xcmp_code, tvb:range(1, 1))
  t:add(f.xcmp_checksum, tvb:range(2, 2))
  t:add(f.xcmp_id, tvb:range(4, 2))
  t:add(f.xcmp_seq, tvb:range(6, 2))
  if tvb:len() > 8 then t:add(f.xcmp_data, tvb:range(8, tvb:len() - 8)) end
  pinfo.cols.protocol = "XCMP"
  pinfo.cols.info = string.format("XCMP %s id=%d seq=%d", XCMP_TYPES[kind] or ("type " .. kind),
    tvb:range(4, 2):uint(), tvb:range(6, 2):uint())
end

-- ---- DGRAM services -------------------------------------------------------------------

local function dissect_xhcp(tvb, pinfo, tree)
  local t = tree:add(p_xhcp, tvb:range(0, tvb:len()))
  local len = tvb:len()
  if len < 6 then return malformed(t, tvb, 0, "XHCP packet without its 6-byte header") end
  t:add_le(f.xhcp_seq, tvb:range(0, 4))
  t:add_le(f.xhcp_count, tvb:range(4, 2))
  local count, at = tvb:range(4, 2):le_uint(), 6
  local ad, gateway, solicit
  for i = 1, count do
    if at + 2 > len then return malformed(t, tvb, at, "XHCP entry " .. i .. " of " .. count .. " runs past the end") end
    local kind = tvb:range(at, 2):le_int()
    local text, stop = cstring(tvb, at + 2, len)
    if not text then return malformed(t, tvb, at, "XHCP entry " .. i .. " is not NUL-terminated") end
    local e = t:add(tvb:range(at, stop - at), string.format("%s: %s", XHCP_ENTRIES[kind] or ("type " .. kind),
      #text > 64 and (text:sub(1, 61) .. "...") or text))
    e:add_le(f.xhcp_entry_type, tvb:range(at, 2))
    if stop - 1 > at + 2 then e:add(f.xhcp_entry, tvb:range(at + 2, stop - 1 - (at + 2))) end
    if kind == 1 then ad = text; t:add(f.xhcp_ad, tvb:range(at + 2, stop - 1 - (at + 2)))
    elseif kind == 2 then gateway = text; t:add(f.xhcp_gateway, tvb:range(at + 2, stop - 1 - (at + 2)))
    elseif kind == 103 then solicit = text end
    at = stop
  end
  pinfo.cols.protocol = "XHCP"
  if solicit then
    pinfo.cols.info = "XHCP solicit from " .. solicit
  else
    pinfo.cols.info = string.format("XHCP beacon seq=%d AD %s gateway %s", tvb:range(0, 4):le_uint(),
      ad and ad:sub(1, 11) or "?", gateway and gateway:sub(1, 12) or "?")
  end
end

--- A WireReader-style XID field (24 bytes) added as text; returns the new offset or nil.
local function wire_xid(t, tvb, at, limit, field)
  if at + 24 > limit then return nil end
  t:add(field, tvb:range(at, 24), xid_text(tvb, at))
  return at + 24
end

local function wire_string(t, tvb, at, limit, field)
  if at + 2 > limit then return nil end
  local n = tvb:range(at, 2):uint()
  if at + 2 + n > limit then return nil end
  if n > 0 then t:add(field, tvb:range(at + 2, n)) else t:add(field, tvb:range(at, 2), "") end
  return at + 2 + n
end

local function dissect_mobility(tvb, pinfo, tree)
  local t = tree:add(p_mob, tvb:range(0, tvb:len()))
  local len = tvb:len()
  if len < 1 then return malformed(t, tvb, 0, "empty mobility message") end
  local kind = tvb:range(0, 1):uint()
  t:add(f.mob_type, tvb:range(0, 1))
  if not MOBILITY_TYPES[kind] then return malformed(t, tvb, 0, "mobility message type " .. kind) end
  -- The sealed message: version, kind, key(32), body length, body, signature(64).
  if len < 1 + 36 + 64 then return malformed(t, tvb, 1, "sealed message shorter than its fixed fields") end
  local s = t:add(tvb:range(1, len - 1), "Signed message")
  s:add(f.signed_version, tvb:range(1, 1))
  s:add(f.signed_kind, tvb:range(2, 1))
  s:add(f.signed_key, tvb:range(3, 32))
  s:add(f.signed_len, tvb:range(35, 2))
  local body_len, body = tvb:range(35, 2):uint(), 37
  if body + body_len + 64 ~= len then return malformed(s, tvb, 35, "sealed message length does not add up") end
  local limit = body + body_len
  local signed_kind = tvb:range(2, 1):uint()
  local at = body
  local summary
  if signed_kind == 1 then
    local hid_at = at
    at = wire_xid(s, tvb, at, limit, f.mob_hid)
    at = at and wire_xid(s, tvb, at, limit, f.mob_new_ad)
    local new_router_at = at
    at = at and wire_xid(s, tvb, at, limit, f.mob_new_router)
    at = at and wire_string(s, tvb, at, limit, f.mob_new_link)
    at = at and wire_xid(s, tvb, at, limit, f.mob_old_ad)
    at = at and wire_xid(s, tvb, at, limit, f.mob_old_router)
    at = at and wire_string(s, tvb, at, limit, f.mob_old_link)
    if at and at + 16 <= limit then
      s:add(f.mob_seq, tvb:range(at, 8))
      s:add(f.mob_ts, tvb:range(at + 8, 8))
      summary = string.format("HID-move notice %s %s -> router %s seq=%s", MOBILITY_TYPES[kind], xid_text(tvb, hid_at):sub(1, 12),
        xid_text(tvb, new_router_at):sub(1, 12), tostring(tvb:range(at, 8):uint64()))
      at = at + 16
    else
      return malformed(s, tvb, body, "move notice body is cut short")
    end
  elseif signed_kind == 2 then
    local hid_at = at
    at = wire_xid(s, tvb, at, limit, f.mob_hid)
    if at and at + 8 <= limit then s:add(f.mob_seq, tvb:range(at, 8)); at = at + 8 else at = nil end
    at = at and wire_xid(s, tvb, at, limit, f.mob_router)
    if not at then return malformed(s, tvb, body, "move ack body is cut short") end
    summary = string.format("HID-move ack for %s seq=%s", xid_text(tvb, hid_at):sub(1, 12), tostring(tvb:range(hid_at + 24, 8):uint64()))
  else
    return malformed(s, tvb, 2, "signed kind " .. signed_kind .. " on the mobility SID")
  end
  if at ~= limit then return malformed(s, tvb, at, "trailing bytes in the signed body") end
  s:add(f.signature, tvb:range(limit, 64))
  pinfo.cols.protocol = "xmig-mobility"
  pinfo.cols.info = summary
end

--- xrouted's text framing: `type^field^field^` (the xmig1: field is base64, shown shortened).
local function dissect_xroute(tvb, pinfo, tree)
  local t = tree:add(p_xroute, tvb:range(0, tvb:len()))
  local text = tvb:range(0, tvb:len()):string()
  local first = text:match("^(%d+)%^")
  if not first then return malformed(t, tvb, 0, "XROUTE message does not start with `type^`") end
  local kind = tonumber(first)
  t:add(f.xroute_type, tvb:range(0, #first), kind)
  local at = #first + 1
  for field in text:sub(at + 1):gmatch("([^%^]*)%^") do
    if #field > 0 then t:add(f.xroute_field, tvb:range(at, #field)) end
    at = at + #field + 1
  end
  pinfo.cols.protocol = "XROUTE"
  pinfo.cols.info = "XROUTE " .. (XROUTE_TYPES[kind] or ("type " .. kind))
end

local function dissect_xns(tvb, pinfo, tree)
  local t = tree:add(p_xns, tvb:range(0, tvb:len()))
  local len = tvb:len()
  if len < 2 then return malformed(t, tvb, 0, "name-service message shorter than 2 bytes") end
  local kind = tvb:range(0, 1):uint()
  t:add(f.xns_type, tvb:range(0, 1))
  t:add(f.xns_flags, tvb:range(1, 1))
  local at, first = 2, nil
  while at < len do
    local text, stop = cstring(tvb, at, len)
    if not text then return malformed(t, tvb, at, "name-service field is not NUL-terminated") end
    if stop - 1 > at then t:add(f.xns_field, tvb:range(at, stop - 1 - at)) end
    first = first or text
    at = stop
  end
  pinfo.cols.protocol = "XNS"
  pinfo.cols.info = "XNS " .. (NS_TYPES[kind] or ("type " .. kind)) .. (first and first ~= "" and (" " .. first:sub(1, 48)) or "")
end

local DGRAM_SERVICES = {
  XHCP = dissect_xhcp, MOBILITY = dissect_mobility, XROUTE = dissect_xroute, NAME_SERVER = dissect_xns,
}

-- ---- mover control messages over STREAM ---------------------------------------------

-- Per STREAM connection, direction and hop (the UDP port it was sent to: a capture on
-- a router's host sees each segment once per link), where the next control message
-- starts in the stream; filled on the first pass in capture order, and what each frame held is kept
-- by frame number so later passes (and the GUI) show the same thing.
local mover_next = {}
local mover_seen = {}
-- Which XIP packet of the frame is being dissected (a UDP GSO datagram holds several):
-- per-frame state is kept per packet.
local packet_in_frame = 1

local function mover_message(tvb, t, at, avail)
  -- One complete frame `u32 length, u8 type, body` in [at, at + avail).
  local length = tvb:range(at, 4):uint()
  local kind = tvb:range(at + 4, 1):uint()
  local m = t:add(p_mover, tvb:range(at, 4 + length))
  m:add(f.mv_length, tvb:range(at, 4))
  m:add(f.mv_type, tvb:range(at + 4, 1))
  local b, stop = at + 5, at + 4 + length
  local name = MOVER_TYPES[kind] or ("type " .. kind)
  m:append_text(": " .. name)
  local function need(n) return b + n <= stop end
  if kind == 1 and need(18) then
    m:add(f.mv_session, tvb:range(b, 16)); m:add(f.mv_version, tvb:range(b + 16, 1)); m:add(f.mv_mode, tvb:range(b + 17, 1))
    if stop > b + 18 then m:add(f.mv_source, tvb:range(b + 18, stop - b - 18)) end
  elseif kind == 2 and need(24) then
    m:add(f.mv_session, tvb:range(b, 16)); m:add(f.mv_round, tvb:range(b + 16, 8))
  elseif kind == 3 and need(12) then
    m:add(f.mv_round, tvb:range(b, 8)); m:add(f.mv_count, tvb:range(b + 8, 4))
    local n, c = tvb:range(b + 8, 4):uint(), b + 12
    name = string.format("OFFER round %s, %d chunks", tostring(tvb:range(b, 8):uint64()), n)
    for _ = 1, n do
      if c + 5 > stop then return nil, "OFFER chunk list runs past its frame" end
      local k = tvb:range(c, 1):uint()
      local size = k == 0 and 25 or 5
      if c + size > stop then return nil, "OFFER chunk runs past its frame" end
      local ch = m:add(tvb:range(c, size), k == 0 and ("fetch " .. hex(tvb:range(c + 5, 20))) or "zero chunk")
      ch:add(f.mv_kind, tvb:range(c, 1)); ch:add(f.mv_chunk_len, tvb:range(c + 1, 4))
      if k == 0 then ch:add(f.mv_cid, tvb:range(c + 5, 20)) end
      c = c + size
    end
    if c ~= stop then return nil, "OFFER has trailing bytes" end
  elseif kind == 4 and need(8) then
    m:add(f.mv_round, tvb:range(b, 8)); name = "ACK round " .. tostring(tvb:range(b, 8):uint64())
  elseif kind == 5 and need(16) then
    m:add(f.mv_rounds, tvb:range(b, 8)); m:add(f.mv_bytes, tvb:range(b + 8, 8))
    name = string.format("DONE %s rounds, %s bytes", tostring(tvb:range(b, 8):uint64()), tostring(tvb:range(b + 8, 8):uint64()))
  elseif kind == 6 then
    -- DONE_ACK has no body
  elseif kind == 7 and need(4) then
    m:add(f.mv_count, tvb:range(b, 4))
    local n = tvb:range(b, 4):uint()
    if b + 4 + 20 * n ~= stop then return nil, "REQUEST count does not match its frame" end
    for i = 0, n - 1 do m:add(f.mv_cid, tvb:range(b + 4 + 20 * i, 20)) end
  elseif kind == 8 and need(20) then
    m:add(f.mv_cid, tvb:range(b, 20))
  elseif kind == 9 then
    if stop > b then m:add(f.mv_text, tvb:range(b, stop - b)) end
  elseif kind == 10 and stop == b then
    -- KEEPALIVE has no body
  else
    return nil, "control message " .. name .. " of " .. length .. " bytes does not parse"
  end
  return name
end

--- The control messages in one STREAM frame's data (stream offset `offset`, data at tvb[at, at+len)).
local function dissect_mover_data(tvb, pinfo, tree, key, offset, at, len)
  local seen = mover_seen[pinfo.number]
  if not seen then
    seen = {}
    mover_seen[pinfo.number] = seen
  end
  local slot = packet_in_frame .. ":" .. at
  local known = seen[slot]
  if not known then
    -- First pass: where, within this data, do messages start?
    local next_at = mover_next[key] or 0
    known = { starts = {}, note = nil }
    if offset + len <= next_at then
      known.note = offset < next_at and "continuation (or a retransmission) of an earlier control message" or nil
    elseif offset > next_at then
      known.note = "data after a gap in the capture: control messages not followed"
    else
      local rel = next_at - offset
      if rel > 0 then known.note = "continuation of an earlier control message, then new ones" end
      while rel < len do
        if len - rel < 5 then
          -- Not even a length and type: they begin in the next segment.
          known.starts[#known.starts + 1] = { rel = rel, partial = true }
          next_at = -1
          break
        end
        local length = tvb:range(at + rel, 4):uint()
        if length < 1 or length > MOVER_MAX_FRAME then
          known.starts[#known.starts + 1] = { rel = rel, bad = true }
          next_at = -1
          break
        end
        known.starts[#known.starts + 1] = { rel = rel, partial = rel + 4 + length > len }
        next_at = offset + rel + 4 + length
        rel = rel + 4 + length
      end
      if next_at >= 0 then mover_next[key] = next_at else mover_next[key] = math.huge end
    end
    seen[slot] = known
  end
  if known.note then tree:add(tvb:range(at, len), known.note) end
  local names = {}
  for _, start in ipairs(known.starts) do
    local where = at + start.rel
    if start.bad then
      malformed(tree, tvb, where, "control frame length out of bounds")
    elseif start.partial then
      local m = tree:add(p_mover, tvb:range(where, at + len - where))
      local kind = at + len - where >= 5 and tvb:range(where + 4, 1):uint() or nil
      m:add(f.mv_part, tvb:range(where, at + len - where), "first part of " .. (kind and (MOVER_TYPES[kind] or ("type " .. kind)) or "a control message"))
      m:add_proto_expert_info(e_continued)
      names[#names + 1] = (kind and (MOVER_TYPES[kind] or "?") or "?") .. " (continued)"
    else
      local name, problem = mover_message(tvb, tree, where, at + len - where)
      if name then names[#names + 1] = name else malformed(tree, tvb, where, problem) end
    end
  end
  return names
end

-- ---- STREAM ---------------------------------------------------------------------------

local function dissect_stream(tvb, pinfo, tree, base_at, mover_key)
  local len = tvb:len()
  local t = tree:add(p_stream, tvb:range(base_at, len - base_at))
  if len - base_at < 15 then return malformed(t, tvb, base_at, "STREAM segment shorter than its 15-byte header") end
  t:add(f.st_version, tvb:range(base_at, 1))
  t:add(f.st_cid, tvb:range(base_at + 1, 8))
  t:add(f.st_pn, tvb:range(base_at + 9, 6), tvb:range(base_at + 9, 6):uint64())
  if tvb:range(base_at, 1):uint() ~= 1 then return malformed(t, tvb, base_at, "STREAM version is not 1") end
  local cid = hex(tvb:range(base_at + 1, 8))
  local at = base_at + 15
  local frames, control = {}, {}
  local function need(n, what)
    if at + n > len then malformed(t, tvb, at, "STREAM " .. what .. " frame runs past the segment") return false end
    return true
  end
  while at < len do
    local kind = tvb:range(at, 1):uint()
    local name = STREAM_FRAMES[kind]
    if not name then return malformed(t, tvb, at, string.format("STREAM frame type 0x%02x is not known", kind)) end
    local start = at
    at = at + 1
    local fr
    if kind == 0x01 then
      fr = t:add(tvb:range(start, 1), "PING")
    elseif kind == 0x02 then
      if not need(1, "ACK") then return end
      local n = tvb:range(at, 1):uint()
      at = at + 1
      if not need(12 * n, "ACK") then return end
      fr = t:add(tvb:range(start, 2 + 12 * n), "ACK, " .. n .. " ranges")
      for i = 0, n - 1 do
        fr:add(f.st_ack_start, tvb:range(at + 12 * i, 6), tvb:range(at + 12 * i, 6):uint64())
        fr:add(f.st_ack_end, tvb:range(at + 12 * i + 6, 6), tvb:range(at + 12 * i + 6, 6):uint64())
      end
      at = at + 12 * n
    elseif kind == 0x04 then
      if not need(2, "RESET") then return end
      fr = t:add(tvb:range(start, 3), "RESET")
      fr:add(f.st_reset, tvb:range(at, 2))
      at = at + 2
    elseif kind == 0x08 or kind == 0x09 then
      if not need(10, "STREAM") then return end
      local offset = tvb:range(at, 6):uint64():tonumber()
      local length = tvb:range(at + 6, 4):uint()
      at = at + 10
      if not need(length, "STREAM") then return end
      fr = t:add(tvb:range(start, 11 + length), string.format("%s offset %d, %d bytes", name, offset, length))
      fr:add(f.st_offset, tvb:range(start + 1, 6), tvb:range(start + 1, 6):uint64())
      fr:add(f.st_length, tvb:range(start + 7, 4))
      if length > 0 then
        fr:add(f.st_data, tvb:range(at, length))
        if mover_key then
          for _, n in ipairs(dissect_mover_data(tvb, pinfo, fr, cid .. mover_key .. tostring(pinfo.dst_port), offset, at, length)) do control[#control + 1] = n end
        end
      end
      at = at + length
    elseif kind == 0x10 then
      if not need(6, "MAX_DATA") then return end
      fr = t:add(tvb:range(start, 7), "MAX_DATA")
      fr:add(f.st_max, tvb:range(at, 6), tvb:range(at, 6):uint64())
      at = at + 6
    elseif kind == 0x1a or kind == 0x1b then
      if not need(8, name) then return end
      fr = t:add(tvb:range(start, 9), name)
      fr:add(f.st_path, tvb:range(at, 8))
      at = at + 8
    elseif kind == 0x20 then
      if not need(7, "HANDSHAKE") then return end
      fr = t:add(tvb:range(start, 8), "HANDSHAKE")
      fr:add(f.st_role, tvb:range(at, 1))
      fr:add(f.st_max, tvb:range(at + 1, 6), tvb:range(at + 1, 6):uint64())
      at = at + 7
    end
    fr:add(f.st_frame, tvb:range(start, 1))
    frames[#frames + 1] = name
  end
  pinfo.cols.protocol = #control > 0 and "xmig-mover" or "STREAM"
  local info = string.format("STREAM %s pn=%s [%s]", cid, tostring(tvb:range(base_at + 9, 6):uint64()), table.concat(frames, ","))
  if #control > 0 then info = table.concat(control, "; ") .. "  " .. info end
  pinfo.cols.info = info
end

-- ---- CHUNK ----------------------------------------------------------------------------

local function dissect_chunk(tvb, pinfo, tree, at)
  local len = tvb:len()
  local t = tree:add(p_chunk, tvb:range(at, len - at))
  if len - at < 33 then return malformed(t, tvb, at, "CHUNK message shorter than its 33-byte header") end
  local byte = tvb:range(at, 1):uint()
  local op, no_store = band(byte, 0x7f), band(byte, CHUNK_NO_STORE) ~= 0
  t:add(f.ch_op, tvb:range(at, 1), op)
  t:add(f.ch_no_store, tvb:range(at, 1), no_store)
  t:add(f.ch_req, tvb:range(at + 1, 4))
  t:add(f.ch_cid, tvb:range(at + 5, 20))
  local cid = hex(tvb:range(at + 5, 20))
  pinfo.cols.protocol = "CHUNK"
  if op == 1 then
    if no_store then return malformed(t, tvb, at, "CHUNK request with the NO_STORE bit") end
    -- 33 bytes, or 35 with the largest fragment the requester takes.
    if len - at ~= 33 and len - at ~= 35 then return malformed(t, tvb, at + 33, "CHUNK request is neither 33 nor 35 bytes") end
    t:add(f.ch_offset, tvb:range(at + 25, 4))
    t:add(f.ch_length, tvb:range(at + 29, 4))
    if len - at == 35 then t:add(f.ch_max_fragment, tvb:range(at + 33, 2)) end
    pinfo.cols.info = string.format("CHUNK REQUEST %s id=%d bytes %d+%d", cid, tvb:range(at + 1, 4):uint(),
      tvb:range(at + 25, 4):uint(), tvb:range(at + 29, 4):uint())
  elseif op == 2 or op == 3 then
    if no_store and op ~= 2 then return malformed(t, tvb, at, "CHUNK NOT_FOUND with the NO_STORE bit") end
    local total, offset, fragment = tvb:range(at + 25, 4):uint(), tvb:range(at + 29, 4):uint(), len - at - 33
    t:add(f.ch_total, tvb:range(at + 25, 4))
    t:add(f.ch_offset, tvb:range(at + 29, 4))
    t:add(f.ch_fragment, tvb:range(at + 29, 4), fragment)
    if offset + fragment > total then return malformed(t, tvb, at + 29, "CHUNK fragment runs past the chunk's length") end
    pinfo.cols.info = string.format("CHUNK %s %s id=%d %d-%d of %d%s", CHUNK_OPS[op], cid, tvb:range(at + 1, 4):uint(),
      offset, offset + fragment, total, no_store and " no-store" or "")
  else
    return malformed(t, tvb, at, "CHUNK op " .. op .. " is not known")
  end
end

-- ---- XIP ------------------------------------------------------------------------------

--- The XIP packets of a datagram as {offset, length} pairs, when it is one or more
--- well-formed XIP headers back to back whose lengths add up exactly: a link sending
--- with UDP GSO puts several packets in one datagram, and a capture on the sending
--- host (or on a veth or bridge) sees them so. nil when the lengths do not add up.
local function xip_packets(tvb, strict)
  local len = tvb:len()
  local packets, at = {}, 0
  while at < len do
    if len - at < XIP_BASE then return nil end
    if tvb:range(at, 1):uint() ~= 1 then return nil end
    local nd, ns = tvb:range(at + 5, 1):uint(), tvb:range(at + 6, 1):uint()
    if strict and (nd < 1 or nd > 20 or ns > 20) then return nil end
    local total = XIP_BASE + XIP_NODE * (nd + ns) + tvb:range(at + 2, 2):uint()
    if total > len - at then return nil end
    packets[#packets + 1] = { at, total }
    at = at + total
  end
  if #packets == 0 then return nil end
  return packets
end

--- Whether the datagram is well-formed XIP (one packet, or several back to back) whose lengths add up.
local function looks_like_xip(tvb)
  return xip_packets(tvb, true) ~= nil
end

local function sink_sid(dag)
  local sink = dag.xids[dag.count - 1]
  if sink and sink:sub(1, 4) == "SID:" then return sink:sub(5) end
  return nil
end

local function dissect_xip_packet(tvb, pinfo, tree)
  local len = tvb:len()
  local t = tree:add(p_xip, tvb:range(0, len))
  pinfo.cols.protocol = "XIP"
  local nd, ns = tvb:range(5, 1):uint(), tvb:range(6, 1):uint()
  local header = XIP_BASE + XIP_NODE * (nd + ns)
  t:add(f.version, tvb:range(0, 1))
  t:add(f.next_hdr, tvb:range(1, 1))
  t:add(f.payload_len, tvb:range(2, 2))
  t:add(f.hop_limit, tvb:range(4, 1))
  t:add(f.num_dst, tvb:range(5, 1))
  t:add(f.num_src, tvb:range(6, 1))
  t:add(f.last_node, tvb:range(7, 1))
  if len < header then
    malformed(t, tvb, 0, "XIP header claims " .. (nd + ns) .. " nodes, more than the datagram holds")
    return len
  end
  local dst = read_dag(tvb, XIP_BASE, nd)
  local src = read_dag(tvb, XIP_BASE + XIP_NODE * nd, ns)
  local function add_dag(field, dag, offset, label)
    local text = dag_text(dag)
    local d = t:add(field, tvb:range(offset, XIP_NODE * dag.count), text)
    for i = 0, dag.count - 1 do
      local at = offset + i * XIP_NODE
      local n = d:add(f.node, tvb:range(at, XIP_NODE))
      n:set_text(string.format("%s node %d: %s", label, i, dag.xids[i]))
      n:add(f.xid_type, tvb:range(at, 4))
      n:add(f.xid_id, tvb:range(at + 4, 20))
      n:add(f.edges, tvb:range(at + 24, 4))
    end
    return text
  end
  local dst_text = add_dag(f.dst, dst, XIP_BASE, "dst")
  add_dag(f.src, src, XIP_BASE + XIP_NODE * nd, "src")
  if nd > 0 then t:add(f.dst_sink, tvb:range(XIP_BASE + XIP_NODE * (nd - 1), 24), dst.xids[nd - 1]) end
  if ns > 0 then t:add(f.src_sink, tvb:range(XIP_BASE + XIP_NODE * (nd + ns - 1), 24), src.xids[ns - 1]) end
  local plen = tvb:range(2, 2):uint()
  if plen ~= len - header then
    malformed(t, tvb, 2, string.format("payload length %d, but %d bytes follow the header", plen, len - header))
    return len
  end
  pinfo.cols.info = "XIP to " .. dst_text
  local nxt = tvb:range(1, 1):uint()
  if plen == 0 then return len end
  local payload = tvb:range(header, plen):tvb()
  if nxt == NXT.XCMP then
    dissect_xcmp(payload, pinfo, tree)
  elseif nxt == NXT.TRANSPORT then
    local kind = payload:range(0, 1):uint()
    t:add(f.transport, tvb:range(header, 1))
    local dst_sid, src_sid = sink_sid(dst), sink_sid(src)
    if kind == TRANSPORT.DGRAM then
      local d = tree:add(p_dgram, payload:range(0, plen))
      local service = (dst_sid and SID_NAMES[dst_sid]) or (src_sid and SID_NAMES[src_sid])
      d:add(f.dgram_service, payload:range(0, 1), service or (dst_sid and ("SID:" .. dst_sid) or "?"))
      pinfo.cols.protocol = "DGRAM"
      pinfo.cols.info = "DGRAM to " .. dst_text
      if plen > 1 then
        local data = payload:range(1, plen - 1):tvb()
        local handler = service and DGRAM_SERVICES[service]
        if handler then handler(data, pinfo, tree) else d:add(f.dgram_data, payload:range(1, plen - 1)) end
      end
    elseif kind == TRANSPORT.STREAM then
      local key = nil
      if dst_sid == SID.MIGRATION then key = ">" elseif src_sid == SID.MIGRATION then key = "<" end
      dissect_stream(payload, pinfo, tree, 1, key)
    elseif kind == TRANSPORT.CHUNK then
      dissect_chunk(payload, pinfo, tree, 1)
    else
      malformed(t, tvb, header, "transport type " .. kind .. " is not known")
    end
  elseif nxt ~= NXT.NONE then
    t:add(tvb:range(header, plen), "Payload (next header " .. nxt .. ")")
  end
  return len
end

--- One datagram: one XIP packet, or (UDP GSO, seen before the kernel cut it) several
--- back to back, each dissected as its own packet, the Info column listing them.
function p_xip.dissector(tvb, pinfo, tree)
  local len = tvb:len()
  if len < XIP_BASE then return 0 end
  local packets = xip_packets(tvb, false)
  packet_in_frame = 1
  if not packets or #packets == 1 then return dissect_xip_packet(tvb, pinfo, tree) end
  local infos = {}
  for i, p in ipairs(packets) do
    packet_in_frame = i
    dissect_xip_packet(tvb:range(p[1], p[2]):tvb(), pinfo, tree)
    infos[i] = tostring(pinfo.cols.info)
  end
  packet_in_frame = 1
  pinfo.cols.info = string.format("[%d XIP packets, UDP GSO] %s", #packets, table.concat(infos, " | "))
  return len
end

local function heuristic(tvb, pinfo, tree)
  if not p_xip.prefs.heuristic or not looks_like_xip(tvb) then return false end
  p_xip.dissector(tvb, pinfo, tree)
  return true
end
p_xip:register_heuristic("udp", heuristic)

local udp_table = DissectorTable.get("udp.port")
udp_table:add_for_decode_as(p_xip)
local registered = nil
function p_xip.prefs_changed()
  if registered then udp_table:remove(registered, p_xip) end
  registered = p_xip.prefs.udp_ports
  if registered and registered ~= "" then udp_table:add(registered, p_xip) end
end

function p_xip.init()
  mover_next = {}
  mover_seen = {}
end
