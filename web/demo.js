// The live transcription page: /demo?room=<slug>&name=<display name>#token=<transcription JWT>.
// The token stays in the fragment (browsers never send it in page requests); it goes to the server only as the
// WebSocket's `token` parameter, as the protocol wants. The page is a viewer of its room from the start and a
// speaker once the microphone is on.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const query = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get('token') || '';
  const claims = readClaims(token);
  const room = query.get('room') || claims.sessionSlug || '';
  const name = query.get('name') || claims.name || claims.identity || '';

  // Plain words for every close code (docs/close-codes.md) and error/warning code the server sends.
  const closeWords = {
    1000: 'Stopped: every final is in.',
    1001: 'The server is shutting down (1001).',
    1002: 'The server refused a malformed close (1002).',
    1006: 'The connection dropped without a goodbye (1006).',
    1008: 'The server closed the stream for a policy violation (1008).',
    1009: 'A message was too large for the server (1009).',
    1011: 'The server hit an internal error (1011).',
    4408: 'The server heard no answer to its pings (4408: heartbeat timeout).',
    4409: 'This page read too slowly and the server closed it (4409).',
  };
  const codeWords = {
    invalid_audio_frame: 'The server dropped an audio frame it could not read.',
    rate_limited: 'Audio arrived faster than real time; some was dropped.',
    invalid_json: 'The server could not read a message from this page.',
    unknown_message: 'The server did not know a message from this page.',
    stt_unavailable: 'No speech-to-text is available for this stream right now.',
    stt_auth_failed: 'The speech-to-text provider refused the service’s credentials.',
    stt_busy: 'The speech-to-text provider is busy; try again in a moment.',
    internal: 'The server hit an internal error.',
  };

  let ws = null;
  let opened = false;
  let stopping = false;
  let stopped = false;
  let attempts = 0;
  let retryTimer = null;
  let lastSpeaker = 0;
  let framesSent = 0; // also on the page (data-frames-sent), for whoever watches it
  const backlog = []; // microphone frames captured while disconnected (at most 5 s)
  const mic = { stream: null, ctx: null, node: null };

  function readClaims(jwt) {
    try {
      const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(decodeURIComponent(escape(atob(part))));
    } catch (e) {
      return {};
    }
  }

  function setConnection(text, cls) {
    const el = $('connection');
    el.textContent = text;
    el.className = cls || '';
  }

  function notice(text, isError) {
    const el = $('notice');
    el.textContent = text;
    el.className = isError ? 'error' : '';
    el.hidden = !text;
  }

  function clock(ms) {
    return new Date(ms || Date.now()).toLocaleTimeString([], { hour12: false });
  }

  function socketUrl() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}/api/realtime/transcribe?token=${encodeURIComponent(token)}` +
      `&sessionSlug=${encodeURIComponent(room)}`;
  }

  function connect() {
    retryTimer = null;
    opened = false;
    setConnection(attempts ? `Reconnecting to room ${room}…` : `Connecting to room ${room}…`);
    ws = new WebSocket(socketUrl());
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      opened = true;
      attempts = 0;
      setConnection(`Connected to room ${room}`, 'ok');
      notice('');
      while (backlog.length) ws.send(backlog.shift());
    };
    ws.onmessage = (e) => {
      if (typeof e.data !== 'string') return;
      let m;
      try {
        m = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      onMessage(m);
    };
    ws.onclose = (e) => onClose(e);
  }

  function onMessage(m) {
    switch (m.type) {
      case 'stt_status':
        $('stt').textContent = `Speech-to-text: ${m.status}${m.provider ? ` (${m.provider})` : ''}`;
        break;
      case 'transcript_partial':
        showPartial(m);
        break;
      case 'transcript_final':
        showFinal(m);
        break;
      case 'warning':
        notice(codeWords[m.code] || m.message || m.code, false);
        break;
      case 'error':
        notice(codeWords[m.code] || m.message || m.code, true);
        break;
      case 'transcription_error':
        notice(`Room transcription failed: ${m.message || m.reason}`, true);
        break;
      default:
        break;
    }
  }

  function speakerOf(m) {
    return m.speakerName || m.speakerId || m.speaker || 'room';
  }

  function showPartial(m) {
    let p = document.querySelector(`#partials p[data-utterance="${CSS.escape(m.utteranceId)}"]`);
    if (!p) {
      p = document.createElement('p');
      p.dataset.utterance = m.utteranceId;
      const who = document.createElement('span');
      who.className = 'speaker';
      p.append(who, document.createElement('span'));
      $('partials').append(p);
    }
    p.firstChild.textContent = speakerOf(m);
    p.lastChild.textContent = m.text;
  }

  function showFinal(m) {
    const partial = document.querySelector(`#partials p[data-utterance="${CSS.escape(m.utteranceId)}"]`);
    if (partial) partial.remove();
    if (!m.text || document.querySelector(`#finals li[data-utterance="${CSS.escape(m.utteranceId)}"]`)) return;
    const li = document.createElement('li');
    li.dataset.utterance = m.utteranceId;
    li.dataset.speakerId = m.speakerId || '';
    const time = document.createElement('time');
    time.textContent = clock(m.ts);
    const who = document.createElement('span');
    who.className = 'speaker';
    who.textContent = speakerOf(m);
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = m.text;
    li.append(time, who, text);
    $('finals').append(li);
  }

  async function onClose(e) {
    ws = null;
    if (stopping) {
      stopped = true;
      setConnection(e.code === 1000 ? closeWords[1000] : `Stopped (${e.code}).`, e.code === 1000 ? 'ok' : 'bad');
      $('stop').disabled = true;
      return;
    }
    let why = closeWords[e.code] || `The connection closed (${e.code}${e.reason ? `: ${e.reason}` : ''}).`;
    if (opened) notice(why, e.code !== 1001); // why the stream ended stays in view until it is back
    if (!opened) {
      // The upgrade was refused (the browser hides the HTTP answer) or the server is unreachable: ask the server
      // whether this link's token is good, with the same token, on a route that says why when it is not.
      const verdict = await checkToken();
      if (verdict.fatal) {
        setConnection('Not connected', 'bad');
        notice(verdict.text, true);
        return;
      }
      why = verdict.text;
    }
    const delay = Math.min(30, 2 ** attempts) * (0.8 + 0.4 * Math.random());
    attempts++;
    setConnection(`${why} Reconnecting in ${Math.max(1, Math.round(delay))} s…`, 'bad');
    retryTimer = setTimeout(connect, delay * 1000);
  }

  async function checkToken() {
    let res;
    try {
      res = await fetch(`/api/sessions/${encodeURIComponent(room)}/transcript?limit=1`, {
        headers: { Authorization: `Bearer ${token}` },
        cache: 'no-store',
      });
    } catch (err) {
      return { fatal: false, text: 'The server cannot be reached.' };
    }
    let body = {};
    try {
      body = await res.json();
    } catch (err) {
      body = {};
    }
    if (res.status === 401) {
      return {
        fatal: true,
        text: `The server refused this link’s token: ${body.message || 'invalid token'}. Ask for a new link.`,
      };
    }
    if (res.status === 403) {
      return { fatal: true, text: `This link’s token is not for room “${room}”. Ask for a link to this room.` };
    }
    return { fatal: false, text: 'The server did not take the stream (busy or restarting).' };
  }

  function onFrame(data) {
    $('level').value = Math.min(1, data.level * 4);
    if (stopping) return;
    const now = Date.now();
    if (data.level > 0.02 && now - lastSpeaker >= 1000 && ws && opened && ws.readyState === WebSocket.OPEN) {
      lastSpeaker = now;
      ws.send(JSON.stringify({ type: 'active_speaker', timestamp: now }));
    }
    if (ws && opened && ws.readyState === WebSocket.OPEN) {
      ws.send(data.pcm);
      document.body.dataset.framesSent = ++framesSent;
    } else {
      backlog.push(data.pcm);
      if (backlog.length > 250) backlog.shift();
    }
  }

  async function startMic() {
    const button = $('mic');
    button.disabled = true;
    try {
      // The page plays nothing, so the browser's echo cancellation and other processing only alter the voice.
      mic.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      mic.ctx = new AudioContext();
      await mic.ctx.audioWorklet.addModule('/demo/worklet.js');
      const source = mic.ctx.createMediaStreamSource(mic.stream);
      mic.node = new AudioWorkletNode(mic.ctx, 'pcm16-capture', {
        numberOfOutputs: 1,
        processorOptions: { targetRate: 16000, frameMs: 20 },
      });
      mic.node.port.onmessage = (e) => onFrame(e.data);
      const mute = mic.ctx.createGain();
      mute.gain.value = 0; // the node is pulled by the destination, and nothing is heard
      source.connect(mic.node).connect(mute).connect(mic.ctx.destination);
      if (mic.ctx.state === 'suspended') await mic.ctx.resume();
      button.textContent = 'Microphone on';
      button.classList.add('on');
    } catch (err) {
      notice(`The microphone could not be opened: ${err.message || err.name}.`, true);
      button.disabled = false;
    }
  }

  function stopMic() {
    if (mic.stream) mic.stream.getTracks().forEach((t) => t.stop());
    if (mic.ctx) mic.ctx.close();
    mic.stream = mic.ctx = mic.node = null;
    $('mic').classList.remove('on');
    $('mic').textContent = 'Microphone off';
  }

  function stop() {
    if (stopping || stopped) return;
    stopping = true;
    $('stop').disabled = true;
    $('mic').disabled = true;
    stopMic();
    backlog.length = 0;
    if (retryTimer) {
      clearTimeout(retryTimer);
      retryTimer = null;
    }
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: 'stop' }));
      setConnection('Stopping: the last words are being transcribed…');
    } else {
      stopped = true;
      setConnection('Stopped.');
    }
  }

  $('who').textContent = room ? `Room “${room}”${name ? ` · you are ${name}` : ''}` : 'No room';
  if (!token) {
    setConnection('Not connected', 'bad');
    notice('This page needs a link with a token (#token=…): script/server prints one, and so does ' +
      'sessions-ws-token --demo-link.', true);
    return;
  }
  if (!window.AudioWorkletNode || !navigator.mediaDevices) {
    notice('This browser cannot capture the microphone here (it needs https:// or localhost); the room is shown.',
      false);
  } else {
    $('mic').disabled = false;
  }
  $('mic').addEventListener('click', startMic);
  $('stop').addEventListener('click', stop);
  $('stop').disabled = false;
  connect();
})();
