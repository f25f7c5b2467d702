// Hardhat's node as a second local chain (LEDGER_NODE=hardhat). Only `hardhat node` runs with this file:
// Hardhat never compiles here (Ape compiles with solc-js), so it never downloads a compiler.
// The chain matches Anvil's defaults, so dev0 ... dev19 are the same accounts on both nodes.
const config = {
  networks: {
    hardhat: {
      chainId: 31337,
      // Anvil 1.7.1 runs the latest fork without EIP-7825's 16,777,216 gas cap per transaction, and Ape sends
      // local transactions with the block's gas limit (30M). Hardhat enforces the cap from "osaka" on, so the
      // node runs "prague": the same EVM for contracts compiled for cancun.
      hardfork: "prague",
      accounts: {
        mnemonic: "test test test test test test test test test test test junk",
        path: "m/44'/60'/0'/0",
        count: 20, // Ape's test.number_of_accounts; `ledger chain up` passes LEDGER_DEV_ACCOUNTS (below)
        accountsBalance: "10000000000000000000000", // 10,000 ETH each, as on Anvil
      },
      allowUnlimitedContractSize: false,
      mining: { auto: true, interval: 0 },
      blockGasLimit: 30_000_000,
      loggingEnabled: false,
    },
  },
  // Nothing to compile: an empty sources folder, and caches kept out of the project's tree.
  paths: {
    sources: "./empty",
    cache: "../../.tmp/hardhat/cache",
    artifacts: "../../.tmp/hardhat/artifacts",
  },
};

if (process.env.LEDGER_DEV_ACCOUNTS) {
  config.networks.hardhat.accounts.count = Number(process.env.LEDGER_DEV_ACCOUNTS);
}

module.exports = config;
