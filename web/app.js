// Starts Converse.js against this server. The settings come from config.json next to this page:
//   { "domain": "localhost", "registration": true, "mucDomain": "conference.localhost",
//     "websocketUrl": "wss://…" (optional; default: /xmpp-websocket on the page's own host) }
// The local stack generates config.json (local/web-http.ts); the cloud site gets it from the CDK
// construct (cdk/lib/web-client.ts), pointed at the deployed WebSocket API.
(function () {
  'use strict';

  function showStartupError(text) {
    var p = document.getElementById('startup-error');
    if (!p) return;
    p.textContent = text;
    p.hidden = false;
  }

  function showConnectionBanner(lost) {
    var banner = document.getElementById('connection-banner');
    if (banner) banner.hidden = !lost;
  }

  function webSocketUrl(config) {
    if (config.websocketUrl) return config.websocketUrl;
    var scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    return scheme + '//' + window.location.host + (config.websocketPath || '/xmpp-websocket');
  }

  // A small plugin of this page, through Converse's own plugin API:
  // - Converse's full-screen footer shows its sponsors' logos from their web site. This page loads
  //   nothing from other origins (its Content-Security-Policy would block them, with an error in the
  //   console each time), so the footer becomes an empty element (api.elements.define exists to let
  //   plugins override elements).
  // - Converse 14.0.0's "Accept as contact" dialog calls contact.authorize().subscribe(), but
  //   RosterContact has no such method any more (it is subscribeToPresence(); the `subscribe` it
  //   reaches is the model's event API, which does nothing here): the person who accepts a request
  //   never asks for the other's presence in return, and sees them offline for ever. A call to
  //   subscribe() without arguments is made to do what the dialog means.
  // - While the connection is lost Converse only shows a spinner where the contacts were: a banner
  //   says what is going on until it is back.
  var PAGE_PLUGIN = 'local-page';
  function addPagePlugin(converse) {
    converse.plugins.add(PAGE_PLUGIN, {
      dependencies: ['converse-roster'],
      initialize: function () {
        var _converse = this._converse;
        var api = _converse.api;
        api.elements.define('converse-footer', class extends HTMLElement {});
        api.listen.on('will-reconnect', function () { showConnectionBanner(true); });
        api.listen.on('reconnected', function () { showConnectionBanner(false); });
        api.listen.on('connected', function () { showConnectionBanner(false); });
        api.listen.on('disconnected', function () { showConnectionBanner(false); });
        var RosterContact = _converse.exports && _converse.exports.RosterContact;
        if (RosterContact && typeof RosterContact.prototype.subscribeToPresence === 'function') {
          var eventSubscribe = RosterContact.prototype.subscribe;
          RosterContact.prototype.subscribe = function () {
            if (arguments.length === 0) return this.subscribeToPresence();
            return eventSubscribe.apply(this, arguments);
          };
        }
      },
    });
  }

  // ---- invitations (XEP-0401 / XEP-0445) ------------------------------------------------------
  // An invitation link opens this page with #invite=<token>[&from=<inviter>]. Converse.js registers
  // accounts (XEP-0077) but cannot present an invitation token first, so the page does those few
  // frames itself over the same WebSocket endpoint (RFC 7395), then starts the chat logged in.

  function inviteFromHash() {
    var m = /^#invite=([A-Za-z0-9_-]+)(?:&from=([^&]*))?$/.exec(window.location.hash);
    return m ? { token: m[1], from: m[2] ? decodeURIComponent(m[2]) : undefined } : undefined;
  }

  function xmlEscape(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' }[c];
    });
  }

  function errorText(el, fallback) {
    var error = el.getElementsByTagName('error')[0];
    if (!error) return fallback;
    var text = error.getElementsByTagName('text')[0];
    if (text && text.textContent) return text.textContent;
    if (error.getElementsByTagName('conflict').length) return 'That username is taken: choose another.';
    return fallback;
  }

  /** Opens a stream, presents the token, registers; resolves when the account exists. */
  function registerWithInvite(config, token, username, password) {
    return new Promise(function (resolve, reject) {
      var ws = new WebSocket(webSocketUrl(config), 'xmpp');
      var done = false;
      var timer = setTimeout(function () { finish(new Error('The server did not answer.')); }, 20000);
      function finish(err) {
        if (done) return;
        done = true;
        clearTimeout(timer);
        try {
          ws.send('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>');
          ws.close();
        } catch (e) {
          // already closed
        }
        if (err) reject(err);
        else resolve();
      }
      ws.onopen = function () {
        ws.send('<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="' + xmlEscape(config.domain) + '" version="1.0"/>');
      };
      ws.onerror = function () { finish(new Error('The connection to the server failed.')); };
      ws.onclose = function () { finish(new Error('The server closed the connection.')); };
      ws.onmessage = function (event) {
        var el = new DOMParser().parseFromString(event.data, 'application/xml').documentElement;
        if (el.localName === 'features') {
          ws.send('<iq xmlns="jabber:client" type="set" id="preauth"><preauth xmlns="urn:xmpp:pars:0" token="' + xmlEscape(token) + '"/></iq>');
        } else if (el.localName === 'iq' && el.getAttribute('id') === 'preauth') {
          if (el.getAttribute('type') !== 'result') return finish(new Error(errorText(el, 'The invitation is invalid or has expired.')));
          ws.send('<iq xmlns="jabber:client" type="set" id="register"><query xmlns="jabber:iq:register"><username>' + xmlEscape(username) +
            '</username><password>' + xmlEscape(password) + '</password></query></iq>');
        } else if (el.localName === 'iq' && el.getAttribute('id') === 'register') {
          if (el.getAttribute('type') !== 'result') return finish(new Error(errorText(el, 'The account could not be created.')));
          finish();
        } else if (el.localName === 'error') {
          finish(new Error('The server ended the connection.'));
        }
      };
    });
  }

  function showInvite(config, invite) {
    var form = document.getElementById('invite-form');
    var intro = document.getElementById('invite-intro');
    var error = document.getElementById('invite-error');
    intro.textContent = (invite.from ? invite.from + ' invited you' : 'You were invited') + ' to chat on ' + config.domain +
      '. Choose your username and password' + (invite.from ? ': ' + invite.from + ' will be in your contacts.' : '.');
    form.hidden = false;
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      var username = form.elements.username.value.trim();
      var password = form.elements.password.value;
      error.hidden = true;
      form.querySelector('button').disabled = true;
      registerWithInvite(config, invite.token, username, password).then(
        function () {
          form.hidden = true;
          // The token is used up: drop it from the address, then log in as the new account.
          window.history.replaceState(null, '', window.location.pathname);
          start(config, { jid: username + '@' + config.domain, password: password });
        },
        function (err) {
          error.textContent = err.message;
          error.hidden = false;
          form.querySelector('button').disabled = false;
        },
      );
    });
  }

  function start(config, login) {
    if (!window.converse) throw new Error('Converse.js did not load (converse/converse.min.js)');
    addPagePlugin(window.converse);
    var assets = new URL('converse/', window.location.href).pathname;
    var settings = {
      websocket_url: webSocketUrl(config),
      // The WebSocket is configured: no BOSH, no look-up of the XMPP domain's own host-meta.
      discover_connection_methods: false,
      view_mode: 'fullscreen',
      assets_path: assets,
      sounds_path: assets + 'sounds/',
      i18n: 'en',
      default_domain: config.domain,
      domain_placeholder: config.domain,
      registration_domain: config.domain,
      allow_registration: config.registration === true,
      // No list of public providers fetched from elsewhere: this page belongs to one server.
      xmpp_providers_url: '',
      muc_domain: config.mucDomain || undefined,
      // The room-name field of "Add groupchat" searches rooms as one types, by default at a public
      // search service on another server; here the query goes to this server's own MUC service
      // (which has no search and answers with an error), so room names never leave the server.
      muc_search_service: config.mucDomain || '',
      auto_reconnect: true,
      // XEP-0198 off in this page for now: after a second drop Converse.js (14) binds anew instead of
      // resuming a session that was itself resumed, and its roster then shows contacts offline
      // though their presence arrives (traced in docs/mobile.md). Other clients resume.
      enable_smacks: false,
      use_system_emojis: true,
      play_sounds: false,
      show_desktop_notifications: false,
      show_connection_url_input: false,
      // OMEMO needs WebAssembly compiled from the page, which the Content-Security-Policy forbids.
      blacklisted_plugins: ['converse-omemo'],
      whitelisted_plugins: [PAGE_PLUGIN],
      loglevel: config.loglevel || 'warn',
    };
    // Right after an invitation: log in as the account just made.
    if (login) Object.assign(settings, { jid: login.jid, password: login.password, auto_login: true });
    window.converse.initialize(settings);
  }

  fetch('config.json', { cache: 'no-store' })
    .then(function (response) {
      if (!response.ok) throw new Error('config.json: HTTP ' + response.status);
      return response.json();
    })
    .then(function (config) {
      var invite = inviteFromHash();
      if (invite) showInvite(config, invite);
      else start(config);
    })
    .catch(function (err) {
      showStartupError('The chat could not start: ' + (err && err.message ? err.message : err));
    });
})();
