// ES module entry: the same objects as the CommonJS entry.
import ferrovia from './index.js';

export const { Server, SessionRequest, RequestStream, WebTransportSession, WebSocketSession, DatagramDuplexStream, WebTransportError, toDuplex, generateCertificate } = ferrovia;
export default ferrovia;
