/// What the loader needs to know about a shared object before it lets `dlopen` run any of its code:
/// that it is a complete 64-bit little-endian ELF shared object for this machine, and whether its
/// dynamic symbol table defines the plugin entry.
///
/// It reads the file's bytes only; nothing here loads or executes the file.
struct ELFImage: Equatable {
    /// Why a file cannot be a plugin for this host, in words.
    enum Problem: Error, Equatable, CustomStringConvertible {
        case notELF(firstBytes: [UInt8])
        case truncated(String)
        case not64Bit
        case notLittleEndian
        case wrongMachine(found: UInt16)
        case notSharedObject(type: UInt16)

        var description: String {
            switch self {
            case .notELF(let bytes):
                let shown = bytes.map { byte in
                    (32...126).contains(byte) ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16)
                }.joined()
                return bytes.isEmpty
                    ? "not an ELF file: the file is empty"
                    : "not an ELF file: it starts with \"\(shown)\", not \"\\x7fELF\""
            case .truncated(let detail):
                return "truncated or damaged: \(detail)"
            case .not64Bit:
                return "a 32-bit ELF file; this host loads 64-bit plugins only"
            case .notLittleEndian:
                return "a big-endian ELF file; this host is little-endian"
            case .wrongMachine(let found):
                return "built for \(ELFImage.machineName(found)), but this host is \(ELFImage.machineName(ELFImage.hostMachine))"
            case .notSharedObject(let type):
                return "an ELF \(ELFImage.typeName(type)), not a shared object (build it as a dynamic library)"
            }
        }
    }

    /// Dynamic symbols the file defines (not the ones it imports), by name.
    let definedDynamicSymbols: Set<String>

    func defines(_ symbol: String) -> Bool { definedDynamicSymbols.contains(symbol) }

    static var hostMachine: UInt16 {
        #if arch(x86_64)
        return 62
        #elseif arch(arm64)
        return 183
        #elseif arch(riscv64)
        return 243
        #else
        return 0
        #endif
    }

    static func machineName(_ machine: UInt16) -> String {
        switch machine {
        case 3: "x86 (32-bit)"
        case 40: "ARM (32-bit)"
        case 62: "x86_64"
        case 183: "aarch64"
        case 243: "riscv64"
        default: "machine \(machine)"
        }
    }

    static func typeName(_ type: UInt16) -> String {
        switch type {
        case 1: "relocatable object (.o)"
        case 2: "executable"
        case 4: "core dump"
        default: "file of type \(type)"
        }
    }

    /// Parses `bytes`, the whole file.
    init(bytes: [UInt8]) throws(Problem) {
        let reader = ByteReader(bytes)
        guard bytes.count >= 4, bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46 else {
            throw .notELF(firstBytes: Array(bytes.prefix(4)))
        }
        guard bytes.count >= 64 else {
            throw .truncated("the file is \(bytes.count) bytes, shorter than an ELF header (64 bytes)")
        }
        guard bytes[4] == 2 else { throw .not64Bit }
        guard bytes[5] == 1 else { throw .notLittleEndian }
        let type = reader.u16(16)
        let machine = reader.u16(18)
        guard machine == Self.hostMachine else { throw .wrongMachine(found: machine) }
        guard type == 3 else { throw .notSharedObject(type: type) }

        let programHeaderOffset = reader.u64(32)
        let programHeaderSize = UInt64(reader.u16(54))
        let programHeaderCount = UInt64(reader.u16(56))
        let sectionHeaderOffset = reader.u64(40)
        let sectionHeaderSize = UInt64(reader.u16(58))
        let sectionHeaderCount = UInt64(reader.u16(60))
        let fileSize = UInt64(bytes.count)

        if programHeaderCount > 0, programHeaderSize < 56 {
            throw .truncated("program headers are \(programHeaderSize) bytes, expected 56")
        }
        try Self.requireRange(
            programHeaderOffset, programHeaderSize * programHeaderCount, within: fileSize,
            "the program header table")
        for index in 0..<programHeaderCount {
            let header = Int(programHeaderOffset + index * programHeaderSize)
            let fileOffset = reader.u64(header + 8)
            let fileBytes = reader.u64(header + 32)
            try Self.requireRange(fileOffset, fileBytes, within: fileSize, "segment \(index)")
        }

        guard sectionHeaderCount > 0, sectionHeaderSize >= 64 else {
            throw .truncated("the file has no section header table, so its dynamic symbols cannot be read")
        }
        try Self.requireRange(
            sectionHeaderOffset, sectionHeaderSize * sectionHeaderCount, within: fileSize,
            "the section header table")

        struct Section { let type: UInt32; let offset: UInt64; let size: UInt64; let link: UInt32; let entrySize: UInt64 }
        var sections: [Section] = []
        for index in 0..<sectionHeaderCount {
            let header = Int(sectionHeaderOffset + index * sectionHeaderSize)
            let section = Section(
                type: reader.u32(header + 4), offset: reader.u64(header + 24), size: reader.u64(header + 32),
                link: reader.u32(header + 40), entrySize: reader.u64(header + 56))
            if section.type != 8 {  // SHT_NOBITS occupies no file space
                try Self.requireRange(section.offset, section.size, within: fileSize, "section \(index)")
            }
            sections.append(section)
        }

        var defined = Set<String>()
        for symbols in sections where symbols.type == 11 {  // SHT_DYNSYM
            guard Int(symbols.link) < sections.count, symbols.entrySize >= 24 else {
                throw .truncated("the dynamic symbol table points to a missing string table")
            }
            let strings = sections[Int(symbols.link)]
            for index in 0..<(symbols.size / symbols.entrySize) {
                let symbol = Int(symbols.offset + index * symbols.entrySize)
                let nameOffset = UInt64(reader.u32(symbol))
                let info = bytes[symbol + 4]
                let sectionIndex = reader.u16(symbol + 6)
                let binding = info >> 4
                guard sectionIndex != 0, binding == 1 || binding == 2 else { continue }  // defined, GLOBAL or WEAK
                guard nameOffset < strings.size else {
                    throw .truncated("a dynamic symbol's name lies outside the string table")
                }
                defined.insert(reader.cString(at: Int(strings.offset + nameOffset), limit: Int(strings.offset + strings.size)))
            }
        }
        definedDynamicSymbols = defined
    }

    private static func requireRange(_ offset: UInt64, _ length: UInt64, within fileSize: UInt64, _ what: String) throws(Problem) {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= fileSize else {
            throw .truncated("\(what) ends at byte \(overflow ? "beyond 2^64" : String(end)), but the file has \(fileSize) bytes")
        }
    }
}

/// Little-endian reads from a byte array. Callers check ranges first.
private struct ByteReader {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func u16(_ offset: Int) -> UInt16 {
        UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    func u32(_ offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }

    func u64(_ offset: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }

    func cString(at offset: Int, limit: Int) -> String {
        var end = offset
        while end < limit, end < bytes.count, bytes[end] != 0 { end += 1 }
        return String(decoding: bytes[offset..<end], as: UTF8.self)
    }
}
