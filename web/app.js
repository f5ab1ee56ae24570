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

  function start(config) {
    if (!window.converse) throw new Error('Converse.js did not load (converse/converse.min.js)');
    addPagePlugin(window.converse);
    var assets = new URL('converse/', window.location.href).pathname;
    window.converse.initialize({
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
      // XEP-0198 off in this page for now: after a dropped socket Converse.js (12) binds anew when
      // its previous session had itself been resumed, and its roster then showed contacts offline
      // though their presence arrived (test/browser). Other clients resume (docs/mobile.md).
      enable_smacks: false,
      use_system_emojis: true,
      play_sounds: false,
      show_desktop_notifications: false,
      show_connection_url_input: false,
      // OMEMO needs WebAssembly compiled from the page, which the Content-Security-Policy forbids.
      blacklisted_plugins: ['converse-omemo'],
      whitelisted_plugins: [PAGE_PLUGIN],
      loglevel: config.loglevel || 'warn',
    });
  }

  fetch('config.json', { cache: 'no-store' })
    .then(function (response) {
      if (!response.ok) throw new Error('config.json: HTTP ' + response.status);
      return response.json();
    })
    .then(start)
    .catch(function (err) {
      showStartupError('The chat could not start: ' + (err && err.message ? err.message : err));
    });
})();
