// ES module entry: the same objects as the CommonJS entry.
import ferrovia from './index.js';

export const { Server, SessionRequest, RequestStream, WebTransportSession, DatagramDuplexStream, WebTransportError, toDuplex } = ferrovia;
export default ferrovia;
